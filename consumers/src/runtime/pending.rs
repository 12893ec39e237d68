//! The backlog of each served job type, as `codigo_consumer_pending_messages`.
use std::sync::Arc;
use std::time::Duration;

use codigo_common::shutdown::Shutdown;

use super::Shared;
use crate::events::{Meters, PendingMessages};
use crate::pause::pause;

/// Reports each served consumer's `num_pending` every few seconds until `shutdown`.
pub async fn report_pending(
    shared: Arc<Shared>,
    served: Vec<(&'static str, Arc<Meters>)>,
    shutdown: Shutdown,
) {
    while !shutdown.is_cancelled() {
        if let Ok(stream) = shared.js.get_stream(shared.names.jobs_stream()).await {
            for (job_type, meters) in &served {
                if let Ok(info) = stream.consumer_info(shared.names.durable(job_type)).await {
                    meters.emit(PendingMessages(info.num_pending));
                }
            }
        }
        pause(&shutdown, Duration::from_secs(5)).await;
    }
}
