//! A job type in one file: `greeting.send`, its payload, its kind and its worker, served by a
//! consumer of its own. `cargo run -p codigo-consumer --example greeting` starts it with the
//! usual settings (CODIGO_NAMESPACE, DATABASE_URL, ...); a job published to
//! `<namespace>.jobs.greeting.send` ends with its greeting in `jobs.result`.
use async_trait::async_trait;
use clap::Parser;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_consumer::{Application, Config};
use codigo_schemas::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The payload, as `greeting.v1.schema.json` describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Greeting {
    pub name: String,
}

impl JobKind for Greeting {
    const NAME: &'static str = "greeting.send";
    const VERSION: u32 = 1;
    const SCHEMA: &'static str = include_str!("greeting.v1.schema.json");
}

/// The work. The runtime decodes the payload, records the job and acknowledges it; effects
/// in Postgres go through `tx`, the transaction the job's row is written in.
pub struct Greeter;

#[async_trait]
impl Worker<Greeting> for Greeter {
    async fn work(&self, job: &JobCtx<'_, Greeting>, tx: &mut JobTx) -> Result<Done, JobError> {
        if job.payload.name.trim().is_empty() {
            return Err(JobError::permanent(
                "a greeting needs a name that is not blank; resubmit it with one",
            ));
        }
        let (greeted_at,): (time::OffsetDateTime,) = sqlx::query_as("SELECT now()")
            .fetch_one(tx.conn().await?)
            .await?;
        Ok(Done::with_result(json!({
            "greeting": format!("Hello, {}!", job.payload.name),
            "greeted_at": greeted_at.unix_timestamp(),
        })))
    }
}

/// The consumer, serving the greeting next to the job types of CODIGO_JOB_TYPES.
pub async fn consumer(config: Config) -> Result<Application, codigo_consumer::StartError> {
    Ok(Application::build(config)
        .await?
        .with_worker::<Greeting>(Greeter))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = codigo_common::telemetry::init("codigo-consumer", &config.service.telemetry)?;
    let app = consumer(config).await?;
    let result = app
        .run_until_stopped(codigo_common::shutdown::on_signals())
        .await;
    telemetry.shutdown();
    Ok(result?)
}
