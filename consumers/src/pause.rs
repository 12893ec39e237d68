//! Waiting that gives way to shutdown.
use std::time::Duration;

use codigo_common::shutdown::Shutdown;

/// Sleeps, or returns early at shutdown.
pub async fn pause(shutdown: &Shutdown, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {},
        () = shutdown.cancelled() => {},
    }
}
