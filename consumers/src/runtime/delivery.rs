//! One delivery of a message: what its settling, dead-lettering and tracing need to know.
use async_nats::jetstream;
use codigo_common::telemetry;
use uuid::Uuid;

#[derive(Clone, Copy)]
pub(crate) struct Delivery<'a> {
    pub job_type: &'static str,
    pub message: &'a jetstream::Message,
    pub subject: &'a str,
    /// 1 for the first delivery.
    pub attempt: u64,
    /// Sequence on the work stream.
    pub stream_sequence: u64,
}

impl<'a> Delivery<'a> {
    pub fn of(job_type: &'static str, message: &'a jetstream::Message) -> Self {
        let (attempt, stream_sequence) = message
            .info()
            .map(|info| {
                (
                    u64::try_from(info.delivered).unwrap_or(1),
                    info.stream_sequence,
                )
            })
            .unwrap_or((1, 0));
        Self {
            job_type,
            message,
            subject: message.subject.as_str(),
            attempt,
            stream_sequence,
        }
    }

    /// The job's `process_job` span, continuing the trace its message carries.
    pub fn span(&self, job_id: Option<Uuid>) -> tracing::Span {
        let span = tracing::info_span!(
            "process_job",
            job_type = self.job_type,
            attempt = self.attempt,
            job_id = tracing::field::Empty
        );
        telemetry::link_to_remote_parent(&span, self.message.headers.as_ref());
        if let Some(id) = job_id {
            span.record("job_id", tracing::field::display(id));
        }
        span
    }
}
