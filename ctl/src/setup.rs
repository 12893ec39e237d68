use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs};
use codigo_common::declarations::Declarations;
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
        "nats: streams {}, {}, {}, {} and consumers {} ready",
        names.jobs_stream(),
        names.scheduled_stream(),
        names.dlq_stream(),
        names.advisories_stream(),
        registry()
            .names()
            .map(|t| names.durable(t))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Declared types: their durables exist before any worker pulls (autoscalers read their
    // lag), and the durables of deleted types go once drained.
    let declarations = Declarations::ensure(&js, names, js_args).await?;
    let (declared, _) = declarations.snapshot().await?;
    let mut job_types: Vec<String> = registry().names().map(str::to_owned).collect();
    for declaration in declared {
        let name = declaration.name.clone();
        match declaration.check() {
            Ok(declared) => {
                jetstream::ensure_declared_consumer(&js, names, js_args, &declared).await?;
                job_types.push(name);
            }
            Err(error) => {
                eprintln!("warning: the stored declaration of {name} is not valid ({error}); apply a corrected one with `codigo-ctl types apply`");
                // Its durable is kept: its queued jobs are still someone's.
                job_types.push(name);
            }
        }
    }
    for durable in jetstream::prune_job_consumers(&js, names, &job_types).await? {
        println!("nats: removed {durable}, the drained consumer of a type no longer declared");
    }
    client.flush().await?;
    Ok(())
}

pub async fn teardown(nats_args: &NatsArgs, names: &Names, yes: bool) -> anyhow::Result<()> {
    if !yes {
        anyhow::bail!(
            "teardown deletes {}, {}, {} and {} with every queued and delayed job and dead letter; add --yes to confirm",
            names.jobs_stream(),
            names.scheduled_stream(),
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
