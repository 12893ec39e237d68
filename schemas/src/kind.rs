//! A job kind declares a job type once: its name, version, JSON Schema and payload type. The
//! registry, the producer's validation, `GET /v1/job-types` and the consumer's decoding all
//! derive from it.
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A job type, declared by its payload type.
///
/// ```
/// use codigo_schemas::JobKind;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Greet {
///     name: String,
/// }
///
/// impl JobKind for Greet {
///     const NAME: &'static str = "greet";
///     const VERSION: u32 = 1;
///     const SCHEMA: &'static str = r#"{"type": "object", "required": ["name"]}"#;
/// }
/// assert_eq!(codigo_schemas::kind::<Greet>().name, "greet");
/// ```
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The envelope's `type`, the subject suffix and the `jobs.type` column.
    const NAME: &'static str;
    const VERSION: u32;
    /// The payload's JSON Schema (draft 2020-12), usually `include_str!` of its file.
    const SCHEMA: &'static str;
}

/// What the registry needs of a kind, without its payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub name: &'static str,
    pub version: u32,
    pub schema: &'static str,
}

/// The registry entry of a kind.
pub const fn kind<K: JobKind>() -> KindInfo {
    KindInfo {
        name: K::NAME,
        version: K::VERSION,
        schema: K::SCHEMA,
    }
}
