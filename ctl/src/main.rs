//! `codigo-ctl`: the operator's tool for setting up, inspecting and repairing the pipeline.
#![forbid(unsafe_code)]

mod dlq;
mod files;
mod schedules;
mod setup;
mod slo;
mod status;
mod types;
mod webhooks;

use clap::{Parser, Subcommand, ValueEnum};
use codigo_common::config::ServiceArgs;

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
    service: ServiceArgs,
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
    /// Per job type: scheduled, pending, ack-pending, redelivered and dead-letter counts.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Dead letters: `dlq list|show|replay|purge`.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Delete this namespace's streams and consumers, with every job and dead letter in
    /// them (the database is left alone). Needs `--yes`.
    Teardown {
        #[arg(long)]
        yes: bool,
    },
    /// Service level objectives, read from Prometheus: `slo report`.
    Slo {
        #[command(subcommand)]
        command: slo::SloCommand,
    },
    /// Declared job types (HTTP functions): `types apply -f FILE|list|show|delete|secret`.
    Types {
        #[command(subcommand)]
        command: types::TypesCommand,
    },
    /// Recurring schedules of an API key's tenant, through the gateway:
    /// `schedules apply -f FILE|list|delete NAME`.
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCommand,
    },
    /// Webhook signing secrets: `webhooks secret --tenant T`.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap's usage error is exit 2, which `slo report` answers for an exhausted budget.
        Err(error) if error.use_stderr() && std::env::args().skip(1).any(|a| a == "slo") => {
            let _ = error.print();
            std::process::exit(slo::EXIT_NO_REPORT)
        }
        Err(error) => error.exit(),
    };
    let ServiceArgs {
        nats,
        database,
        jetstream,
        telemetry,
    } = &cli.service;
    if let Command::Slo { command } = cli.command {
        // Reads Prometheus only: none of the NATS or database settings apply, and each of
        // its own errors has its own exit status.
        let _telemetry = codigo_common::telemetry::init_cli("codigo-ctl", telemetry)
            .unwrap_or_else(|error| slo::fail(&error));
        slo::run(command).await
    }
    // Operator output goes to stdout; logs go to stderr.
    let _telemetry = codigo_common::telemetry::init_cli("codigo-ctl", telemetry)?;
    jetstream.validate()?;
    let names = codigo_common::Names::new(&nats.namespace)?;
    match cli.command {
        Command::Setup => setup::run(nats, database, jetstream, &names).await,
        Command::Status { format } => status::run(nats, database, &names, format).await,
        Command::Dlq { command } => dlq::run(nats, &names, command).await,
        Command::Teardown { yes } => setup::teardown(nats, &names, yes).await,
        Command::Slo { .. } => unreachable!("handled above"),
        Command::Types { command } => types::run(nats, jetstream, &names, command).await,
        Command::Schedules { command } => schedules::run(command).await,
        Command::Webhooks { command } => {
            println!("{}", webhooks::run(command)?);
            Ok(())
        }
    }
}
