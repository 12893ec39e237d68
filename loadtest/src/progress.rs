//! A live progress line on a terminal; nothing at all when stderr is not a TTY.
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::e2e::Backlog;
use crate::stats::{fmt_rate, Recorder};
use crate::AbortOnDrop;

pub struct Progress {
    bar: ProgressBar,
    _ticker: Option<AbortOnDrop>,
}

impl Progress {
    /// A bar over `seconds` of sending (or a spinner when the run ends on a job count), fed
    /// from the recorder and the stream's backlog.
    pub fn start(
        enabled: bool,
        label: &str,
        seconds: Option<u64>,
        recorder: Arc<Recorder>,
        backlog: Option<Backlog>,
    ) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
                bar: ProgressBar::hidden(),
                _ticker: None,
            };
        }
        let bar = match seconds {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {elapsed_precise}/{duration_precise} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{prefix} {spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(label.to_owned());
        let ticking = bar.clone();
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                let counts = recorder.counts();
                let elapsed = started.elapsed().as_secs_f64().max(0.001);
                #[allow(clippy::cast_precision_loss)]
                let rate = counts.accepted as f64 / elapsed;
                let in_stream = backlog
                    .as_ref()
                    .and_then(Backlog::get)
                    .map_or_else(String::new, |b| format!(" in-stream {b}"));
                ticking.set_message(format!(
                    "sent {} accepted {} ({}/s) rejected {}{in_stream}",
                    counts.sent,
                    counts.accepted,
                    fmt_rate(rate),
                    counts.rejected
                ));
                if seconds.is_some() {
                    ticking.set_position(started.elapsed().as_secs());
                } else {
                    ticking.tick();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            bar,
            _ticker: Some(AbortOnDrop(task)),
        }
    }

    /// Replaces the line with a phase message (e.g. waiting for the consumers).
    pub fn phase(&self, message: &str) {
        self.bar.set_prefix(message.to_owned());
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
