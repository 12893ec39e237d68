//! `codigo-ctl dlq list|show|replay|purge`: the dead-letter stream for operators.
mod letters;
mod print;
mod replay;

use clap::Subcommand;
use codigo_common::config::NatsArgs;
use codigo_common::Names;
use serde_json::json;

use crate::Format;
use letters::{DeadLetters, Filter};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print one dead letter: headers and body.
    Show {
        /// Sequence number in the dead-letter stream (from `dlq list`).
        seq: u64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Publish dead letters again to the subject they came from, then delete them.
    Replay {
        /// Sequence numbers to replay; without them, every dead letter matching the filters.
        seqs: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Replay every dead letter when neither sequences nor filters are given.
        #[arg(long)]
        all: bool,
        /// Most replays per second, e.g. `10/s` or `10`.
        #[arg(long, default_value = "10/s", value_parser = replay::parse_rate)]
        rate: f64,
        /// Keep the dead letters after replaying them.
        #[arg(long)]
        keep: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete dead letters matching the filters (all of them without filters).
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Really delete; without it nothing is deleted.
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub async fn run(nats_args: &NatsArgs, names: &Names, command: DlqCommand) -> anyhow::Result<()> {
    if let DlqCommand::Replay {
        seqs, filter, all, ..
    } = &command
    {
        if seqs.is_empty() && filter.is_empty() && !all {
            anyhow::bail!(
                "name the dead letters to replay: sequence numbers, filters \
                 (--job-type, --reason, --since, --until), or --all"
            );
        }
    }
    let mut dead_letters = DeadLetters::open(nats_args, names).await?;
    match command {
        DlqCommand::List {
            filter,
            limit,
            format,
        } => {
            let mut found = dead_letters.matching(&filter).await?;
            found.truncate(limit);
            print::list(&found, format)
        }
        DlqCommand::Show { seq, format } => print::show(&dead_letters.get(seq).await?, format),
        DlqCommand::Replay {
            seqs,
            filter,
            rate,
            keep,
            format,
            ..
        } => {
            let chosen = if seqs.is_empty() {
                dead_letters.matching(&filter).await?
            } else {
                let mut chosen = Vec::new();
                for seq in seqs {
                    let letter = dead_letters.get(seq).await?;
                    if filter.matches(&letter) {
                        chosen.push(letter);
                    }
                }
                chosen
            };
            replay::replay(&dead_letters, chosen, rate, keep, format).await
        }
        DlqCommand::Purge {
            filter,
            yes,
            format,
        } => purge(&mut dead_letters, &filter, yes, format).await,
    }
}

async fn purge(
    dead_letters: &mut DeadLetters,
    filter: &Filter,
    yes: bool,
    format: Format,
) -> anyhow::Result<()> {
    let chosen = dead_letters.matching(filter).await?;
    if !yes {
        anyhow::bail!(
            "{} dead letters match; nothing deleted. Check them with `codigo-ctl dlq list` \
             and the same filters, then run again with --yes",
            chosen.len()
        );
    }
    let mut purged = Vec::new();
    for letter in &chosen {
        match dead_letters.delete(letter.seq).await {
            Ok(true) => purged.push(letter.seq),
            Ok(false) => {}
            Err(e) => anyhow::bail!(
                "{e} after {} deletions; run again to continue",
                purged.len()
            ),
        }
    }
    match format {
        Format::Json => println!("{}", json!({"purged": purged.len(), "seqs": purged})),
        Format::Text => println!("purged {} dead letters", purged.len()),
    }
    Ok(())
}
