//! One shutdown signal for the whole process: SIGTERM (Kubernetes) or Ctrl-C.
pub use tokio_util::sync::CancellationToken;

pub type Shutdown = CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or Ctrl-C.
pub fn on_signals() -> Shutdown {
    let token = Shutdown::default();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Runs `round` every `period` until `shutdown`: the background loops that poll Postgres for
/// work that fell due. A failed round is logged with `failing` and the next comes as usual.
pub async fn every<F, Fut, E>(
    shutdown: &Shutdown,
    period: std::time::Duration,
    failing: &str,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut poll = tokio::time::interval(period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = round().await {
            tracing::warn!(%error, "{failing}");
        }
    }
}
