//! Progress signals: jobs still being worked on (or settled) tell JetStream they are alive, so
//! that a slow job is not redelivered to another worker while this one is still on it.
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use codigo_common::shutdown::Shutdown;

pub(crate) enum Attempt<T> {
    Finished(T),
    /// The hard stop came first: the jobs must be handed back.
    Stopped,
}

/// When the jobs of one delivery last told JetStream they are alive. It spans every step of
/// the delivery (worker runs and the pauses between them): a clock restarted per step would
/// never fire while a held job alternates short attempts and short pauses, and JetStream would
/// redeliver a job its worker still holds.
pub(crate) struct Progress {
    every: Duration,
    next: tokio::time::Instant,
}

impl Progress {
    pub fn new(ack_wait: Duration) -> Self {
        let every = (ack_wait / 3).max(Duration::from_millis(500));
        Self {
            every,
            next: tokio::time::Instant::now() + every,
        }
    }

    /// Runs `work` while signalling progress for `messages`, until it finishes or `hard_stop`.
    pub async fn during<F: Future>(
        &mut self,
        messages: &[&jetstream::Message],
        hard_stop: &Shutdown,
        work: F,
    ) -> Attempt<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Attempt::Finished(output),
                () = tokio::time::sleep_until(self.next) => {
                    for message in messages {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::debug!(%error, "progress signal failed");
                        }
                    }
                    self.next = tokio::time::Instant::now() + self.every;
                }
                () = hard_stop.cancelled() => return Attempt::Stopped,
            }
        }
    }
}
