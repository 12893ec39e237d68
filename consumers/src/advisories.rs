//! The worker side of max deliveries: JetStream's advisory, captured by the advisories stream,
//! names the message that ran out of deliveries; [`ExhaustedJobs`] dead-letters it.
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use codigo_common::shutdown::Shutdown;
use futures::StreamExt;
use serde::Deserialize;

use crate::exhausted::{Exhausted, ExhaustedError, ExhaustedJobs};
use crate::pause::pause;

/// `io.nats.jetstream.advisory.v1.max_deliver`
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
    #[serde(default)]
    consumer: String,
}

pub struct AdvisoryWorker {
    pub js: jetstream::Context,
    pub names: codigo_common::Names,
    pub exhausted: Arc<ExhaustedJobs>,
}

impl AdvisoryWorker {
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut consumer = None;
        while !shutdown.is_cancelled() {
            let bound = match consumer.take() {
                Some(c) => c,
                None => {
                    match codigo_common::jetstream::bind_advisories_consumer(&self.js, &self.names)
                        .await
                    {
                        Ok(c) => c,
                        Err(error) => {
                            tracing::warn!(%error, "cannot bind the max-deliveries consumer; retrying");
                            pause(&shutdown, Duration::from_secs(2)).await;
                            continue;
                        }
                    }
                }
            };
            let batch = bound
                .batch()
                .max_messages(16)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "max-deliveries pull failed; retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut healthy = true;
            while let Some(next) = batch.next().await {
                match next {
                    Ok(advisory) => match self.handle(&advisory.payload).await {
                        Ok(()) => {
                            if let Err(error) = advisory.ack().await {
                                tracing::warn!(%error, "ack of max-deliveries advisory failed");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "dead-lettering after max deliveries failed; will retry");
                            let _ = advisory
                                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(5))))
                                .await;
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "max-deliveries stream error; rebinding");
                        healthy = false;
                        break;
                    }
                }
            }
            if healthy {
                consumer = Some(bound);
            }
        }
    }

    async fn handle(&self, payload: &[u8]) -> Result<(), ExhaustedError> {
        let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "ignoring an advisory that does not decode");
                return Ok(());
            }
        };
        self.exhausted
            .dead_letter(&Exhausted {
                stream_seq: advisory.stream_seq,
                deliveries: advisory.deliveries,
                consumer: advisory.consumer,
            })
            .await
    }
}
