//! `codigo-ctl types apply|list|show|delete|secret`: declared job types (HTTP functions), kept
//! in the namespace's job-type bucket and live on every replica within seconds.
use std::path::{Path, PathBuf};

use clap::Subcommand;
use codigo_common::config::{JetStreamArgs, NatsArgs};
use codigo_common::declarations::Declarations;
use codigo_common::jetstream;
use codigo_common::nats::{self, InitialConnect};
use codigo_common::webhook_secret::TenantSecret;
use codigo_common::Names;
use codigo_schemas::{is_type_name, Declaration, DeclaredType, Target};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::webhooks::{MasterKeys, MissingKey};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum TypesCommand {
    /// Declare or update the job types in a YAML or JSON file (one declaration, a list, or
    /// several YAML documents). Every declaration is checked before any is stored; applying
    /// the same file again changes nothing.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// The declared job types.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One declared type's declaration, as JSON.
    Show { job_type: String },
    /// Delete a declared type: the gateways stop taking its jobs; queued ones finish or
    /// dead-letter by its policy.
    Delete { job_type: String },
    /// Print the `whsec_...` secret a function verifies its invocations with.
    Secret {
        job_type: String,
        #[command(flatten)]
        keys: MasterKeys,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TypesError {
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("{path}, declaration #{index} ({name}): {reason}; nothing was applied")]
    Invalid {
        path: String,
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{path} declares {0} twice; nothing was applied", .name)]
    Twice { path: String, name: String },
    #[error("no job type {0:?} is declared; `codigo-ctl types list` shows those that are")]
    NotDeclared(String),
    #[error(transparent)]
    NoKey(#[from] MissingKey),
    #[error(
        "{0:?} is not a job type name: lower-case words joined by dots, such as images.resize"
    )]
    BadName(String),
}

/// The declarations in a file, checked: one object, a list of them, or YAML documents of
/// either.
pub fn read_declarations(path: &Path) -> Result<Vec<DeclaredType>, TypesError> {
    let shown = path.display().to_string();
    let items = crate::files::read_items(path)?;
    let mut declarations: Vec<DeclaredType> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let name = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("without a type")
            .to_owned();
        let invalid = |reason: String| TypesError::Invalid {
            path: shown.clone(),
            index: index + 1,
            name: name.clone(),
            reason,
        };
        let declaration: Declaration =
            serde_json::from_value(item).map_err(|e| invalid(e.to_string()))?;
        let declared = declaration.check().map_err(|e| invalid(e.to_string()))?;
        let name = declared.job_type.name;
        if declarations.iter().any(|d| d.job_type.name == name) {
            return Err(TypesError::Twice {
                path: shown,
                name: name.to_owned(),
            });
        }
        declarations.push(declared);
    }
    Ok(declarations)
}

pub async fn run(
    nats_args: &NatsArgs,
    jetstream: &JetStreamArgs,
    names: &Names,
    command: TypesCommand,
) -> anyhow::Result<()> {
    if let TypesCommand::Secret { job_type, keys } = command {
        println!("{}", secret(&job_type, keys)?);
        return Ok(());
    }
    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = async_nats::jetstream::new(client.clone());
    let declarations = Declarations::ensure(&js, names, jetstream).await?;
    match command {
        TypesCommand::Apply { file } => {
            for declared in read_declarations(&file)? {
                let declaration = &declared.declaration;
                let stored = declarations.get(&declaration.name).await?;
                let verb = match &stored {
                    Some(stored) if stored == declaration => "unchanged",
                    Some(_) => "updated",
                    None => "declared",
                };
                if verb != "unchanged" {
                    declarations.put(&declared).await?;
                }
                // The durable exists before a worker pulls, so that an autoscaler reading its
                // lag sees the queue from the first job.
                jetstream::ensure_declared_consumer(&js, names, jetstream, &declared).await?;
                match verb {
                    "unchanged" => println!("{}: unchanged", declaration.name),
                    _ => println!(
                        "{}: {verb} (version {})",
                        declaration.name, declaration.version
                    ),
                }
            }
        }
        TypesCommand::List { format } => {
            let (all, _) = declarations.snapshot().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Text => {
                    println!(
                        "{:<32} {:>7} {:>8} {:>11}  target",
                        "type", "version", "attempts", "concurrency"
                    );
                    for declaration in &all {
                        let checked = declaration.clone().check();
                        let (attempts, concurrency) = checked
                            .as_ref()
                            .map(|d| {
                                (
                                    d.policy.attempts.to_string(),
                                    d.policy.concurrency.to_string(),
                                )
                            })
                            .unwrap_or_else(|_| ("?".into(), "?".into()));
                        let target = match &declaration.target {
                            Target::Http(http) => url_origin(&http.url),
                            Target::Builtin(name) => format!("builtin {name}"),
                        };
                        println!(
                            "{:<32} {:>7} {:>8} {:>11}  {target}",
                            declaration.name, declaration.version, attempts, concurrency
                        );
                    }
                }
            }
        }
        TypesCommand::Show { job_type } => {
            let declaration = declarations
                .get(&job_type)
                .await?
                .ok_or(TypesError::NotDeclared(job_type))?;
            println!("{}", serde_json::to_string_pretty(&declaration)?);
        }
        TypesCommand::Delete { job_type } => {
            if declarations.delete(&job_type).await? {
                println!("{job_type}: deleted; queued jobs finish or dead-letter by its policy");
            } else {
                println!("{job_type}: not declared; nothing to delete");
            }
        }
        TypesCommand::Secret { .. } => unreachable!("handled above"),
    }
    codigo_common::nats::flush(&client).await;
    Ok(())
}

/// Scheme, host and port: a function's path and query may hold a token.
fn url_origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "(bad URL)".into(), |u| u.origin().ascii_serialization())
}

fn secret(job_type: &str, keys: MasterKeys) -> Result<String, TypesError> {
    if !is_type_name(job_type) {
        return Err(TypesError::BadName(job_type.to_owned()));
    }
    let key = keys.chosen()?;
    Ok(TenantSecret::for_function(key.expose_secret().as_bytes(), job_type).whsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("codigo-types-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn yaml_documents_lists_and_json_all_read() {
        let yaml = file(
            "multi.yaml",
            "type: a.one\nversion: 1\nschema: {type: object}\ntarget: {http: {url: 'http://one:8080/', timeout: 5s}}\n---\n\
             - type: a.two\n  version: 2\n  schema: {type: object}\n  target: {http: {url: 'http://two/'}}\n  retry: {attempts: 3, first_delay: 100ms}\n",
        );
        let read = read_declarations(&yaml).expect("valid");
        assert_eq!(
            read.iter().map(|d| d.job_type.name).collect::<Vec<_>>(),
            ["a.one", "a.two"]
        );
        let json = file(
            "one.json",
            r#"{"type": "a.three", "version": 1, "schema": {}, "target": {"http": {"url": "https://x/"}}}"#,
        );
        assert_eq!(read_declarations(&json).expect("valid").len(), 1);
        for path in [yaml, json] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn one_bad_declaration_refuses_the_whole_file_and_says_which() {
        let path = file(
            "bad.yaml",
            "- {type: a.one, version: 1, schema: {}, target: {http: {url: 'http://one/'}}}\n\
             - {type: a.two, version: 1, schema: {}, target: {http: {url: 'http://two/'}}, retry: {attempts: 0}}\n",
        );
        let error = read_declarations(&path).expect_err("invalid").to_string();
        assert!(error.contains("declaration #2 (a.two)"), "{error}");
        assert!(error.contains("retry.attempts"), "{error}");
        assert!(error.contains("nothing was applied"), "{error}");
        let twice = file(
            "twice.yaml",
            "- {type: a.one, version: 1, schema: {}, target: {http: {url: 'http://one/'}}}\n\
             - {type: a.one, version: 2, schema: {}, target: {http: {url: 'http://one/'}}}\n",
        );
        let error = read_declarations(&twice).expect_err("twice").to_string();
        assert!(error.contains("a.one twice"), "{error}");
        for path in [path, twice] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn function_secrets_differ_from_tenant_secrets() {
        let keys = |previous| MasterKeys {
            previous,
            keys: codigo_common::config::SigningKeys {
                webhook_signing_key: Some(secrecy::SecretString::from("master-key-0123456789")),
                webhook_previous_signing_key: None,
            },
        };
        let function = secret("images.resize", keys(false)).expect("secret");
        assert!(function.starts_with("whsec_"));
        assert_ne!(
            function,
            TenantSecret::derive(b"master-key-0123456789", "images.resize").whsec()
        );
        assert!(matches!(
            secret("images.resize", keys(true)),
            Err(TypesError::NoKey(_))
        ));
        assert!(matches!(
            secret("Images", keys(false)),
            Err(TypesError::BadName(_))
        ));
    }
}
