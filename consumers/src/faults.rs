//! `CODIGO_FAULTS`: fault injection for the chaos suite. It exists only in builds with the
//! `chaos` feature (see [`crate::chaos`]); the default build, which is what ships, refuses it.
#[cfg(feature = "chaos")]
pub use crate::chaos::Faults;

/// Without the `chaos` feature there is no fault injection.
#[cfg(not(feature = "chaos"))]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults;

#[cfg(not(feature = "chaos"))]
impl Faults {
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec.trim().is_empty() {
            return Ok(Self);
        }
        Err(format!(
            "CODIGO_FAULTS is set ({spec:?}), but this codigo-consumer is built without fault \
             injection; unset CODIGO_FAULTS (the chaos suite builds the consumer with \
             `--features chaos`, which is never deployed)"
        ))
    }

    pub fn enabled(&self) -> bool {
        false
    }

    pub fn wrap<W>(&self, worker: W) -> W {
        worker
    }
}
