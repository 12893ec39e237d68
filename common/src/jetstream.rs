//! Streams and consumers, created or brought up to date idempotently by `codigo-ctl setup`
//! and by every binary at start-up.
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use codigo_schemas::{DeclaredType, Policy};

use crate::config::JetStreamArgs;
use crate::Names;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create or update stream {stream}: {source}; is JetStream enabled (nats-server -js) and may this user manage streams?")]
    Stream {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot create consumer {consumer} on {stream}: {source}; if its settings changed incompatibly, delete it with `nats consumer rm {stream} {consumer}` and run `codigo-ctl setup` again")]
    Consumer {
        stream: String,
        consumer: String,
        source: jetstream::stream::ConsumerError,
    },
    #[error(transparent)]
    Declarations(#[from] crate::declarations::DeclarationsError),
    #[error("cannot list or delete the work stream's consumers: {0}; check that this NATS user may manage them (codigo-ctl)")]
    Prune(String),
    #[error("stream {stream} is unreachable: {source}; run `codigo-ctl setup`")]
    Lookup {
        stream: String,
        source: jetstream::context::GetStreamError,
    },
}

/// Largest message the work stream takes; the gateway's body limit sits below it.
pub const MAX_MESSAGE_BYTES: i32 = 2 * 1024 * 1024;

/// A file-backed stream of this namespace, bounded and discard new: full, it refuses new
/// messages (the publisher sees it and keeps or refuses the job) and never drops stored ones.
fn bounded_stream(
    args: &JetStreamArgs,
    (name, description, subject): (String, &str, String),
    retention: stream::RetentionPolicy,
    (max_bytes, max_messages): (i64, i64),
) -> stream::Config {
    stream::Config {
        name,
        description: Some(description.to_owned()),
        subjects: vec![subject],
        retention,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_bytes,
        max_messages,
        num_replicas: args.stream_replicas,
        ..Default::default()
    }
}

pub fn jobs_stream_config(names: &Names, args: &JetStreamArgs) -> stream::Config {
    stream::Config {
        max_message_size: MAX_MESSAGE_BYTES,
        duplicate_window: args.duplicate_window,
        allow_direct: true,
        // Delayed jobs come in from the schedules stream when they are due, under their work
        // subject.
        sources: Some(vec![stream::Source {
            name: names.scheduled_stream(),
            subject_transforms: vec![stream::SubjectTransform {
                source: names.due_wildcard(),
                destination: names.jobs_wildcard(),
            }],
            ..Default::default()
        }]),
        // Full, it pushes back on the gateway (503), never drops accepted jobs.
        ..bounded_stream(
            args,
            (
                names.jobs_stream(),
                "Codigo jobs waiting for a worker",
                names.jobs_wildcard(),
            ),
            stream::RetentionPolicy::WorkQueue,
            (args.stream_max_bytes, args.stream_max_messages),
        )
    }
}

/// How long a due job's copy stays in the schedules stream once the server has published it:
/// the time the work stream has to take it in (sourcing retries while the work stream is
/// full or away) before it is dropped.
pub const DUE_COPY_TTL: &str = "168h";

/// Delayed jobs (message schedules, nats-server 2.12+) until they are due. The server requires
/// discard old of a stream with schedules, so this one has no message or byte limit to
/// discard at: it never drops a pending job, and only the server's storage bounds it (a full
/// server refuses the publish, and the gateway answers 503). A due job's copy leaves it after
/// [`DUE_COPY_TTL`].
pub fn scheduled_stream_config(names: &Names, args: &JetStreamArgs) -> stream::Config {
    stream::Config {
        name: names.scheduled_stream(),
        description: Some("Codigo delayed jobs waiting for their time".into()),
        subjects: vec![names.scheduled_wildcard(), names.due_wildcard()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_message_size: MAX_MESSAGE_BYTES,
        duplicate_window: args.duplicate_window,
        num_replicas: args.stream_replicas,
        allow_message_schedules: true,
        allow_message_ttl: true,
        ..Default::default()
    }
}

pub fn dlq_stream_config(names: &Names, args: &JetStreamArgs) -> stream::Config {
    stream::Config {
        max_age: args.dlq_max_age,
        // Publishing a dead letter is retried after crashes; the window drops the repeats.
        duplicate_window: args.duplicate_window,
        allow_direct: true,
        // Bounded so that one tenant's failures cannot fill JetStream for everyone. Full, it
        // refuses new dead letters: the worker keeps the job (nak, retried later) and the
        // CodigoStreamNearlyFull alert has fired at 80 %.
        ..bounded_stream(
            args,
            (
                names.dlq_stream(),
                "Codigo dead letters, replayable with codigo-ctl dlq replay",
                names.dlq_wildcard(),
            ),
            stream::RetentionPolicy::Limits,
            (args.dlq_max_bytes, args.dlq_max_messages),
        )
    }
}

/// Max-deliveries advisories are plain NATS messages that nobody may be listening to when
/// they fire; capturing them in a stream lets a worker dead-letter those jobs later.
pub fn advisories_stream_config(names: &Names, args: &JetStreamArgs) -> stream::Config {
    stream::Config {
        max_age: args.dlq_max_age,
        // Bounded like the DLQ: the advisories already stored are the jobs waiting to be
        // dead-lettered, none of them is dropped for a newer one.
        ..bounded_stream(
            args,
            (
                names.advisories_stream(),
                "Codigo max-deliveries advisories awaiting dead-lettering",
                names.max_deliveries_advisories(),
            ),
            stream::RetentionPolicy::WorkQueue,
            (args.advisories_max_bytes, args.advisories_max_messages),
        )
    }
}

pub fn job_consumer_config(
    names: &Names,
    args: &JetStreamArgs,
    job_type: &str,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names.durable(job_type)),
        description: Some(format!("Codigo workers for {job_type}")),
        filter_subject: names.job_subject(job_type),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: args.ack_wait,
        max_deliver: args.max_deliver,
        backoff: args.backoff.clone(),
        max_ack_pending: args.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Counts the delayed jobs of one type waiting in the schedules stream: nothing ever pulls
/// from it, so its `num_pending` is their number (it follows schedules that fire and
/// cancelled ones), without listing a subject per job.
pub fn scheduled_counter_config(names: &Names, job_type: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names.scheduled_counter(job_type)),
        description: Some(format!(
            "Codigo: counts delayed {job_type} jobs (never pulled)"
        )),
        filter_subject: names.scheduled_of_type(job_type),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// The delayed jobs of `job_type` waiting for their time; `None` when its counter is missing.
pub async fn scheduled_count(
    js: &jetstream::Context,
    names: &Names,
    job_type: &str,
) -> Option<u64> {
    let stream = js.get_stream_no_info(names.scheduled_stream()).await.ok()?;
    stream
        .consumer_info(names.scheduled_counter(job_type))
        .await
        .ok()
        .map(|info| info.num_pending)
}

pub fn advisories_consumer_config(names: &Names) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names.advisories_durable()),
        description: Some("Codigo dead-lettering of jobs that exhausted MaxDeliver".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<jetstream::stream::Stream, SetupError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|source| SetupError::Stream {
            stream: name.clone(),
            source,
        })?;
    lookup_stream(js, name).await
}

async fn lookup_stream(
    js: &jetstream::Context,
    name: String,
) -> Result<jetstream::stream::Stream, SetupError> {
    js.get_stream(&name)
        .await
        .map_err(|source| SetupError::Lookup {
            stream: name,
            source,
        })
}

async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    stream_name: &str,
    config: consumer::pull::Config,
) -> Result<PullConsumer, SetupError> {
    let name = config.durable_name.clone().unwrap_or_default();
    stream
        .create_consumer(config)
        .await
        .map_err(|source| SetupError::Consumer {
            stream: stream_name.to_owned(),
            consumer: name,
            source,
        })
}

/// Creates or updates the streams and the consumers of the given job types.
pub async fn ensure_topology<'a>(
    js: &jetstream::Context,
    names: &Names,
    args: &JetStreamArgs,
    job_types: impl IntoIterator<Item = &'a str>,
) -> Result<(), SetupError> {
    let scheduled = ensure_stream(js, scheduled_stream_config(names, args)).await?;
    let jobs = ensure_stream(js, jobs_stream_config(names, args)).await?;
    ensure_stream(js, dlq_stream_config(names, args)).await?;
    let advisories = ensure_stream(js, advisories_stream_config(names, args)).await?;
    ensure_consumer(
        &advisories,
        &names.advisories_stream(),
        advisories_consumer_config(names),
    )
    .await?;
    crate::declarations::Declarations::ensure(js, names, args).await?;
    for job_type in job_types {
        ensure_consumer(
            &jobs,
            &names.jobs_stream(),
            job_consumer_config(names, args, job_type),
        )
        .await?;
        ensure_consumer(
            &scheduled,
            &names.scheduled_stream(),
            scheduled_counter_config(names, job_type),
        )
        .await?;
    }
    Ok(())
}

/// What a service does at start: create or update the topology, or, when `codigo-ctl setup`
/// owns it, only check that the streams are there.
pub async fn prepare_topology<'a>(
    js: &jetstream::Context,
    names: &Names,
    args: &JetStreamArgs,
    job_types: impl IntoIterator<Item = &'a str>,
) -> Result<(), SetupError> {
    if args.ensure_topology {
        return ensure_topology(js, names, args, job_types).await;
    }
    // The schedules stream is not looked up: only the gateway writes to it, and a delayed
    // job it cannot store is refused like any other.
    for stream in [
        names.jobs_stream(),
        names.dlq_stream(),
        names.advisories_stream(),
    ] {
        lookup_stream(js, stream).await?;
    }
    Ok(())
}

/// Deletes every stream of a namespace (tests and `codigo-ctl` teardown).
pub async fn delete_topology(js: &jetstream::Context, names: &Names) {
    let bucket = format!("KV_{}", names.job_types_bucket());
    for stream in [
        bucket,
        names.jobs_stream(),
        names.scheduled_stream(),
        names.dlq_stream(),
        names.advisories_stream(),
    ] {
        if let Err(error) = js.delete_stream(&stream).await {
            tracing::debug!(%stream, %error, "stream not deleted");
        }
    }
}

pub type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// The JetStream settings of a declared type's durable consumer: MaxDeliver is the type's
/// attempts, and its back-off is applied by the workers' naks (redeliveries after an ack wait
/// are rare: progress signals keep running jobs alive).
pub fn declared_consumer_args(args: &JetStreamArgs, policy: &Policy) -> JetStreamArgs {
    let mut args = args.clone();
    args.max_deliver = i64::from(policy.attempts);
    args.backoff = Vec::new();
    args
}

/// Creates or updates a declared type's durable consumer. Done where a type is declared, not
/// only by the first worker to pull: until it exists, an autoscaler reading its lag sees none.
pub async fn ensure_declared_consumer(
    js: &jetstream::Context,
    names: &Names,
    args: &JetStreamArgs,
    declared: &DeclaredType,
) -> Result<(), SetupError> {
    let args = declared_consumer_args(args, &declared.policy);
    bind_job_consumer(js, names, &args, declared.job_type.name).await?;
    let scheduled = lookup_stream(js, names.scheduled_stream()).await?;
    ensure_consumer(
        &scheduled,
        &names.scheduled_stream(),
        scheduled_counter_config(names, declared.job_type.name),
    )
    .await
    .map(drop)
}

/// Deletes the work stream's durable consumers of job types outside `job_types` that hold no
/// job (nothing pending, nothing awaiting an ack): what a deleted declared type leaves once
/// its queue is drained. Returns the names deleted.
pub async fn prune_job_consumers(
    js: &jetstream::Context,
    names: &Names,
    job_types: &[String],
) -> Result<Vec<String>, SetupError> {
    use futures::TryStreamExt as _;
    let stream = lookup_stream(js, names.jobs_stream()).await?;
    let keep: Vec<String> = job_types.iter().map(|t| names.durable(t)).collect();
    let infos: Vec<consumer::Info> = stream
        .consumers()
        .try_collect()
        .await
        .map_err(|e| SetupError::Prune(e.to_string()))?;
    let mut deleted = Vec::new();
    for info in infos {
        let Some(job_type) = names.job_type_of(&info.config.filter_subject) else {
            continue;
        };
        let durable = info.config.durable_name.clone().unwrap_or_default();
        let ours = durable == names.durable(job_type);
        let drained = info.num_pending == 0 && info.num_ack_pending == 0;
        if ours && drained && !keep.contains(&durable) {
            stream
                .delete_consumer(&durable)
                .await
                .map_err(|e| SetupError::Prune(e.to_string()))?;
            deleted.push(durable);
        }
    }
    Ok(deleted)
}

/// The durable consumer of one job type, created again if it went missing (deleted by an
/// operator, or lost with a NATS store).
pub async fn bind_job_consumer(
    js: &jetstream::Context,
    names: &Names,
    args: &JetStreamArgs,
    job_type: &str,
) -> Result<PullConsumer, SetupError> {
    let stream = lookup_stream(js, names.jobs_stream()).await?;
    let config = job_consumer_config(names, args, job_type);
    ensure_consumer(&stream, &names.jobs_stream(), config).await
}

/// The advisories consumer shared by every worker replica.
pub async fn bind_advisories_consumer(
    js: &jetstream::Context,
    names: &Names,
) -> Result<PullConsumer, SetupError> {
    let stream = lookup_stream(js, names.advisories_stream()).await?;
    ensure_consumer(
        &stream,
        &names.advisories_stream(),
        advisories_consumer_config(names),
    )
    .await
}
