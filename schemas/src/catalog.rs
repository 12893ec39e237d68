//! The job types a process knows: the built-in registry, compiled in, and the declared types,
//! which come and go while it runs.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::declaration::DeclaredType;
use crate::registry::{registry, JobType, SchemaError};

/// A known job type, built in or declared.
#[derive(Debug, Clone)]
pub enum Known {
    Builtin(&'static JobType),
    Declared(Arc<DeclaredType>),
}

impl Known {
    pub fn job_type(&self) -> &JobType {
        match self {
            Self::Builtin(job_type) => job_type,
            Self::Declared(declared) => &declared.job_type,
        }
    }

    pub fn name(&self) -> &'static str {
        self.job_type().name
    }
}

/// Built-in and declared job types; declared ones are replaced whole, never edited in place.
#[derive(Debug, Default)]
pub struct Catalog {
    declared: RwLock<BTreeMap<&'static str, Arc<DeclaredType>>>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Result<Known, SchemaError> {
        if let Ok(builtin) = registry().job_type(name) {
            return Ok(Known::Builtin(builtin));
        }
        self.read()
            .get(name)
            .cloned()
            .map(Known::Declared)
            .ok_or_else(|| SchemaError::UnknownType(name.to_owned()))
    }

    pub fn knows(&self, name: &str) -> bool {
        registry().job_type(name).is_ok() || self.read().contains_key(name)
    }

    /// Adds a declared type or replaces its previous declaration.
    pub fn declare(&self, declared: DeclaredType) -> Arc<DeclaredType> {
        let declared = Arc::new(declared);
        self.write()
            .insert(declared.job_type.name, declared.clone());
        declared
    }

    /// Replaces every declared type at once (a full reload).
    pub fn replace_declared(&self, declared: Vec<DeclaredType>) {
        let declared = declared
            .into_iter()
            .map(|d| (d.job_type.name, Arc::new(d)))
            .collect();
        *self.write() = declared;
    }

    pub fn remove(&self, name: &str) -> Option<Arc<DeclaredType>> {
        self.write().remove(name)
    }

    /// The declared types, in name order.
    pub fn declared(&self) -> Vec<Arc<DeclaredType>> {
        self.read().values().cloned().collect()
    }

    // A panic while holding the lock leaves the map as it was before that one change.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<&'static str, Arc<DeclaredType>>> {
        self.declared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<&'static str, Arc<DeclaredType>>> {
        self.declared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Declaration;
    use serde_json::json;

    #[test]
    fn declared_types_come_and_go_beside_the_built_in_ones() {
        let catalog = Catalog::new();
        assert!(catalog.knows("ledger.post"));
        assert!(!catalog.knows("thumbs.make"));
        let declaration: Declaration = serde_json::from_value(json!({
            "type": "thumbs.make",
            "version": 2,
            "schema": {"type": "object"},
            "target": {"http": {"url": "http://thumbs:8080/"}},
        }))
        .expect("parses");
        catalog.declare(declaration.check().expect("valid"));
        let known = catalog.get("thumbs.make").expect("declared");
        assert_eq!(known.job_type().version, 2);
        assert!(matches!(catalog.get("ledger.post"), Ok(Known::Builtin(_))));
        assert_eq!(catalog.declared().len(), 1);
        assert!(catalog.remove("thumbs.make").is_some());
        assert!(matches!(
            catalog.get("thumbs.make"),
            Err(SchemaError::UnknownType(_))
        ));
    }
}
