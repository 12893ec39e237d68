use clap::Parser;
use codigo_loadtest::cli::{self, Cli, Command};
use tracing_subscriber::EnvFilter;

// The same allocator as the services, so that the bare baseline it measures is not held back
// by the C library's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only the summary (or its JSON).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    match cli.command {
        Some(Command::Bench(args)) => codigo_loadtest::bench::run(args).await?,
        None => cli::run(cli.run).await?,
    }
    Ok(())
}
