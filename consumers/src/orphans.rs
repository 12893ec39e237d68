//! The sweep for orphans: work-stream messages that JetStream no longer delivers but that are
//! still stored. In a work-queue stream an ack or a term removes the message, so a message of
//! a job type that its durable has settled (at or below the ack floor, or anywhere up to the
//! last delivered one while nothing awaits an ack) yet is still there ran out of deliveries. Its
//! max-deliveries advisory should have dead-lettered it, but advisories are fire-and-forget
//! server publishes: one lost in a leader election, a partition, a paused server or a full
//! advisories stream would strand the job for good. Every replica sweeps (the dead-lettering
//! is idempotent); a message is handled only if it was already there one sweep earlier, so
//! that the advisory, when it was not lost, is the one to handle it.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use codigo_common::shutdown::Shutdown;
use codigo_common::Names;

use crate::events::{self, OrphanFound, OrphanSweepFailed};
use crate::exhausted::{jetstream_error, Exhausted, ExhaustedError, ExhaustedJobs};
use crate::pause::pause;
use crate::runtime::ServedTypes;

/// Most new orphans one sweep of a job type notes; the rest are noted by a later sweep.
const MAX_PER_SWEEP: usize = 1000;

pub struct OrphanSweep {
    pub js: jetstream::Context,
    pub names: Names,
    pub exhausted: Arc<ExhaustedJobs>,
    /// Built-in and declared types alike: a function's jobs are swept like any other.
    pub served: ServedTypes,
    pub interval: Duration,
}

impl OrphanSweep {
    pub async fn run(self, shutdown: Shutdown) {
        // Per job type, the orphans the last sweep saw.
        let mut suspects: BTreeMap<&'static str, BTreeSet<u64>> = BTreeMap::new();
        loop {
            pause(&shutdown, self.interval).await;
            if shutdown.is_cancelled() {
                return;
            }
            for job_type in self.served.names() {
                if shutdown.is_cancelled() {
                    return;
                }
                let seen = suspects.remove(job_type).unwrap_or_default();
                match self.sweep(job_type, &seen).await {
                    Ok(found) => {
                        suspects.insert(job_type, found);
                    }
                    Err(error) => {
                        events::emit(OrphanSweepFailed {
                            job_type,
                            error: &error,
                        });
                        suspects.insert(job_type, seen);
                    }
                }
            }
        }
    }

    /// Dead-letters the orphans of `job_type` that were in `seen` and returns the ones new
    /// to this sweep.
    async fn sweep(
        &self,
        job_type: &str,
        seen: &BTreeSet<u64>,
    ) -> Result<BTreeSet<u64>, ExhaustedError> {
        let stream = self
            .js
            .get_stream(self.names.jobs_stream())
            .await
            .map_err(jetstream_error)?;
        let durable = self.names.durable(job_type);
        let info = stream
            .consumer_info(&durable)
            .await
            .map_err(jetstream_error)?;
        let settled = settled_through(&info);
        let deliveries = u64::try_from(info.config.max_deliver).unwrap_or(0);
        let subject = self.names.job_subject(job_type);
        let mut found = BTreeSet::new();
        let mut next = 1;
        while settled > 0 && found.len() < MAX_PER_SWEEP {
            let message = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let seq = match message {
                Ok(message) if message.sequence <= settled => message.sequence,
                Ok(_) => break,
                Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(error) => return Err(jetstream_error(error)),
            };
            next = seq + 1;
            if !seen.contains(&seq) {
                found.insert(seq);
                continue;
            }
            events::emit(OrphanFound {
                job_type,
                stream_seq: seq,
            });
            self.exhausted
                .dead_letter(&Exhausted {
                    stream_seq: seq,
                    deliveries,
                    consumer: durable.clone(),
                })
                .await?;
        }
        Ok(found)
    }
}

/// The stream sequence up to which the durable has settled every message of its subject: none
/// of them is awaiting an ack or a redelivery. That is the ack floor, and while nothing awaits
/// an ack, everything delivered: nats-server does not move the ack floor past a message that
/// ran out of deliveries until no other message is pending.
fn settled_through(info: &consumer::Info) -> u64 {
    if info.num_ack_pending == 0 {
        info.delivered
            .stream_sequence
            .max(info.ack_floor.stream_sequence)
    } else {
        info.ack_floor.stream_sequence
    }
}
