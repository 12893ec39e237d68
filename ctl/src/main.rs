//! `codigo-ctl`: the operator's tool for setting up, inspecting and repairing the pipeline.
#![forbid(unsafe_code)]

mod setup;
mod slo;
mod status;

use clap::{Parser, Subcommand, ValueEnum};
use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs, TelemetryArgs};

#[derive(Debug, Parser)]
#[command(
    name = "codigo-ctl",
    version,
    about = "Operate the Codigo job pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    jetstream: JetStreamArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply database migrations and create or update streams and consumers (idempotent).
    Setup,
    /// Per job type: pending, ack-pending, redelivered and dead-letter counts.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Service level objectives, read from Prometheus: `slo report`.
    Slo {
        #[command(subcommand)]
        command: slo::SloCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut telemetry_args = cli.telemetry.clone();
    // Operator output goes to stdout; logs stay readable text on stderr unless asked otherwise.
    telemetry_args
        .log_format
        .get_or_insert(codigo_common::config::LogFormat::Text);
    let _telemetry = codigo_common::telemetry::init("codigo-ctl", &telemetry_args)?;
    cli.jetstream.validate().map_err(anyhow::Error::msg)?;
    let names = codigo_common::Names::new(&cli.nats.namespace)?;
    match cli.command {
        Command::Setup => setup::run(&cli.nats, &cli.database, &cli.jetstream, &names).await,
        Command::Status { format } => status::run(&cli.nats, &names, format).await,
        Command::Slo { command } => slo::run(command).await,
    }
}
