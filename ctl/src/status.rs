use std::collections::BTreeMap;

use codigo_common::config::NatsArgs;
use codigo_common::nats::InitialConnect;
use codigo_common::{nats, Names};
use codigo_schemas::registry;
use futures::TryStreamExt;
use serde::Serialize;

use crate::Format;

#[derive(Debug, Serialize)]
struct TypeStatus {
    job_type: &'static str,
    consumer: String,
    pending: u64,
    ack_pending: usize,
    redelivered: usize,
    waiting_pulls: usize,
    dead_letters: usize,
}

pub async fn run(nats_args: &NatsArgs, names: &Names, format: Format) -> anyhow::Result<()> {
    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = async_nats::jetstream::new(client);
    let jobs = js.get_stream(names.jobs_stream()).await.map_err(|e| {
        anyhow::anyhow!(
            "stream {} not found ({e}); run `codigo-ctl setup`",
            names.jobs_stream()
        )
    })?;
    let dlq = js.get_stream(names.dlq_stream()).await?;
    let dead: BTreeMap<String, usize> = dlq
        .info_with_subjects(names.dlq_wildcard())
        .await?
        .try_collect()
        .await?;

    let mut rows = Vec::new();
    for job_type in registry().names() {
        let consumer = names.durable(job_type);
        let info = jobs.consumer_info(&consumer).await.ok();
        rows.push(TypeStatus {
            job_type,
            pending: info.as_ref().map_or(0, |i| i.num_pending),
            ack_pending: info.as_ref().map_or(0, |i| i.num_ack_pending),
            redelivered: info.as_ref().map_or(0, |i| i.num_redelivered),
            waiting_pulls: info.as_ref().map_or(0, |i| i.num_waiting),
            dead_letters: dead.get(&names.dlq_subject(job_type)).copied().unwrap_or(0),
            consumer: if info.is_some() {
                consumer
            } else {
                format!("{consumer} (missing)")
            },
        });
    }

    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!(
                "{:<18} {:<28} {:>10} {:>12} {:>12} {:>8} {:>13}",
                "JOB TYPE",
                "CONSUMER",
                "PENDING",
                "ACK PENDING",
                "REDELIVERED",
                "PULLS",
                "DEAD LETTERS"
            );
            for r in &rows {
                println!(
                    "{:<18} {:<28} {:>10} {:>12} {:>12} {:>8} {:>13}",
                    r.job_type,
                    r.consumer,
                    r.pending,
                    r.ack_pending,
                    r.redelivered,
                    r.waiting_pulls,
                    r.dead_letters
                );
            }
        }
    }
    Ok(())
}
