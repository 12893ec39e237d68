use clap::Parser;
use codigo_producer::{Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = codigo_common::telemetry::init("codigo-producer", &config.telemetry)?;
    let shutdown = codigo_common::shutdown::on_signals();
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(%error, "codigo-producer failed");
    }
    telemetry.shutdown();
    Ok(result?)
}
