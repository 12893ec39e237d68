//! The dead-letter stream, read back whole.

use crate::ChaosError;
use codigo_common::contract::headers;

/// Reads every dead letter: (body, reason).
pub(super) async fn dead_letters(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<Vec<(bytes::Bytes, String)>, ChaosError> {
    let mut stream = js
        .get_stream(stream)
        .await
        .map_err(|e| ChaosError::Check(format!("dead-letter stream {stream}: {e}")))?;
    let state = stream
        .info()
        .await
        .map_err(|e| ChaosError::Check(format!("dead-letter stream info: {e}")))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let reason = message
                .headers
                .get(headers::DLQ_REASON)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((message.payload, reason));
        }
    }
    Ok(out)
}
