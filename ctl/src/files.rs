//! The files `apply -f` reads: JSON, or YAML with one or several documents, each an item or
//! a list of items.
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is neither JSON nor YAML: {reason}")]
    Parse { path: String, reason: String },
}

/// Every item in the file at `path`, in order.
pub fn read_items(path: &Path) -> Result<Vec<Value>, FileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    let documents: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(value) => vec![value],
        Err(_) => {
            let mut documents = Vec::new();
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = <Value as serde::Deserialize>::deserialize(document).map_err(|e| {
                    FileError::Parse {
                        path: shown.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if !value.is_null() {
                    documents.push(value);
                }
            }
            documents
        }
    };
    Ok(documents
        .into_iter()
        .flat_map(|document| match document {
            Value::Array(items) => items,
            other => vec![other],
        })
        .collect())
}
