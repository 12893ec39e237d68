use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs};
use codigo_common::nats::InitialConnect;
use codigo_common::{db, jetstream, nats, Names};
use codigo_schemas::registry;

pub async fn run(
    nats_args: &NatsArgs,
    database: &DatabaseArgs,
    js_args: &JetStreamArgs,
    names: &Names,
) -> anyhow::Result<()> {
    let pool = db::connect(database).await?;
    db::migrate(&pool).await?;
    println!("database: migrations applied");

    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = async_nats::jetstream::new(client.clone());
    jetstream::ensure_topology(&js, names, js_args, registry().names()).await?;
    println!(
        "nats: streams {}, {}, {} and consumers {} ready",
        names.jobs_stream(),
        names.dlq_stream(),
        names.advisories_stream(),
        registry()
            .names()
            .map(|t| names.durable(t))
            .collect::<Vec<_>>()
            .join(", ")
    );
    client.flush().await?;
    Ok(())
}

pub async fn teardown(nats_args: &NatsArgs, names: &Names, yes: bool) -> anyhow::Result<()> {
    if !yes {
        anyhow::bail!(
            "teardown deletes {}, {} and {} with every queued job and dead letter; add --yes to confirm",
            names.jobs_stream(),
            names.dlq_stream(),
            names.advisories_stream()
        );
    }
    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = async_nats::jetstream::new(client.clone());
    jetstream::delete_topology(&js, names).await;
    println!("nats: streams of namespace {} deleted", names.namespace());
    client.flush().await?;
    Ok(())
}
