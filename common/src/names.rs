//! Every NATS name derives from the namespace, so tests and tenants of a shared server never
//! meet.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
    stream_prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("CODIGO_NAMESPACE {0:?} is not valid: use 1-32 characters from a-z, 0-9, '-' and '_', starting with a letter")]
pub struct InvalidNamespace(String);

impl Names {
    pub fn new(namespace: &str) -> Result<Self, InvalidNamespace> {
        let valid = (1..=32).contains(&namespace.len())
            && namespace.starts_with(|c: char| c.is_ascii_lowercase())
            && namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(InvalidNamespace(namespace.to_owned()));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            stream_prefix: namespace.to_ascii_uppercase().replace('-', "_"),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.stream_prefix)
    }

    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix)
    }

    pub fn advisories_stream(&self) -> String {
        format!("{}_ADVISORIES", self.stream_prefix)
    }

    /// The key-value bucket of declared job types (stream `KV_<bucket>`).
    pub fn job_types_bucket(&self) -> String {
        format!("{}_JOB_TYPES", self.stream_prefix)
    }

    pub fn job_subject(&self, job_type: &str) -> String {
        format!("{}.jobs.{job_type}", self.namespace)
    }

    pub fn jobs_wildcard(&self) -> String {
        format!("{}.jobs.>", self.namespace)
    }

    /// Delayed jobs until they are due (message schedules), sourced into the work stream.
    pub fn scheduled_stream(&self) -> String {
        format!("{}_SCHEDULED", self.stream_prefix)
    }

    /// Where a delayed job waits: a message schedule (`Nats-Schedule: @at ...`) of its own,
    /// one subject per job so that it can be looked up and cancelled by id.
    pub fn scheduled_subject(&self, id: &uuid::Uuid, job_type: &str) -> String {
        format!("{}.scheduled.{id}.{job_type}", self.namespace)
    }

    /// Every subject the scheduled job `id` can be waiting on, whatever its type.
    pub fn scheduled_filter(&self, id: &uuid::Uuid) -> String {
        format!("{}.scheduled.{id}.>", self.namespace)
    }

    /// Every subject a delayed job of `job_type` waits on.
    pub fn scheduled_of_type(&self, job_type: &str) -> String {
        format!("{}.scheduled.*.{job_type}", self.namespace)
    }

    /// The durable consumer that counts the delayed jobs of `job_type` (never pulled: its
    /// `num_pending` is the count).
    pub fn scheduled_counter(&self, job_type: &str) -> String {
        format!(
            "{}-scheduled-{}",
            self.namespace,
            job_type.replace('.', "-")
        )
    }

    pub fn scheduled_wildcard(&self) -> String {
        format!("{}.scheduled.>", self.namespace)
    }

    /// Where the server publishes a delayed job when it is due; the work stream sources these
    /// subjects as the job's work subject.
    pub fn due_subject(&self, job_type: &str) -> String {
        format!("{}.due.{job_type}", self.namespace)
    }

    pub fn due_wildcard(&self) -> String {
        format!("{}.due.>", self.namespace)
    }

    pub fn dlq_subject(&self, job_type: &str) -> String {
        format!("{}.dlq.{job_type}", self.namespace)
    }

    pub fn dlq_wildcard(&self) -> String {
        format!("{}.dlq.>", self.namespace)
    }

    /// The `Nats-Msg-Id` of the dead letter of the work-stream message at `stream_sequence`: a
    /// dead letter stored twice (a crash between publishing it and terminating the original)
    /// is dropped by de-duplication.
    pub fn dead_letter_id(&self, stream_sequence: u64) -> String {
        format!("dlq:{}:{stream_sequence}", self.jobs_stream())
    }

    /// The job type a work or dead-letter subject belongs to.
    pub fn job_type_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.namespace)?.strip_prefix('.')?;
        rest.strip_prefix("jobs.")
            .or_else(|| rest.strip_prefix("dlq."))
            .filter(|t| !t.is_empty())
    }

    pub fn durable(&self, job_type: &str) -> String {
        format!("{}-{}", self.namespace, job_type.replace('.', "-"))
    }

    /// Max-deliveries advisories of the work stream's consumers.
    pub fn max_deliveries_advisories(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.jobs_stream()
        )
    }

    pub fn advisories_durable(&self) -> String {
        format!("{}-max-deliveries", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_matches_the_contract() {
        let n = Names::new("codigo").expect("valid");
        assert_eq!(n.jobs_stream(), "CODIGO_JOBS");
        assert_eq!(n.dlq_stream(), "CODIGO_DLQ");
        assert_eq!(n.job_subject("ledger.post"), "codigo.jobs.ledger.post");
        assert_eq!(n.dlq_subject("ledger.post"), "codigo.dlq.ledger.post");
        assert_eq!(n.durable("webhook.deliver"), "codigo-webhook-deliver");
        assert_eq!(
            n.job_type_of("codigo.jobs.ledger.post"),
            Some("ledger.post")
        );
        assert_eq!(
            n.job_type_of("codigo.dlq.webhook.deliver"),
            Some("webhook.deliver")
        );
        assert_eq!(n.job_type_of("other.jobs.x"), None);
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(Names::new("t-1a_b").is_ok());
        assert_eq!(
            Names::new("t-1a").expect("valid").jobs_stream(),
            "T_1A_JOBS"
        );
        for bad in ["", "Upper", "1abc", "a.b", "a b", "a>", &"a".repeat(33)] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
    }
}
