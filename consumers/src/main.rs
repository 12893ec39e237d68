use clap::Parser;
use codigo_consumer::{Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = codigo_common::telemetry::init("codigo-consumer", &config.service.telemetry)?;
    let shutdown = codigo_common::shutdown::on_signals();
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(%error, "codigo-consumer failed");
    }
    telemetry.shutdown();
    Ok(result?)
}
