//! Where the numbers were taken: CPU, memory, kernel, server versions and settings.

use sqlx::postgres::PgPoolOptions;

use crate::scratch::Server;

use super::Ctx;

/// Where the numbers were taken.
pub(super) struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    nats_version: String,
    postgres_version: String,
    postgres_settings: Vec<(String, String)>,
    pub(super) commit: String,
}

impl Machine {
    pub(super) async fn probe(ctx: &Ctx<'_>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        let memory_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let dirty = std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
        let commit = if dirty {
            format!("`{commit}` with uncommitted changes")
        } else {
            format!("`{commit}`")
        };
        let (postgres_version, postgres_settings) = postgres_facts(&ctx.server).await;
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib,
            kernel,
            nats_version: ctx.client.server_info().version,
            postgres_version,
            postgres_settings,
            commit,
        }
    }

    /// The machine's rows of the report's "Machine" table.
    pub(super) fn write_rows(&self, w: &mut String) {
        use std::fmt::Write as _;

        let _ = writeln!(w, "| CPU | {} ({} cores) |", self.cpu, self.cores);
        let _ = writeln!(w, "| memory | {:.0} GiB |", self.memory_gib);
        let _ = writeln!(w, "| OS | {} |", self.kernel);
        let _ = writeln!(
            w,
            "| NATS | nats-server {}, JetStream file storage, 1 replica, server defaults (fsync of the \
             store every 2 min, not per message) |",
            self.nats_version
        );
        let settings = self
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(w, "| PostgreSQL | {} ({settings}) |", self.postgres_version);
    }
}

/// The server's version and the settings that decide how fast and how safely it commits.
pub(super) async fn postgres_facts(server: &Server) -> (String, Vec<(String, String)>) {
    let Ok(pool) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server.database_url("postgres"))
        .await
    else {
        return ("unknown".into(), Vec::new());
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|_| "unknown".into());
    let names = [
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
        "max_wal_size",
        "checkpoint_timeout",
    ];
    let settings: Vec<(String, String)> =
        sqlx::query_as("SELECT name, current_setting(name) FROM unnest($1::text[]) AS name")
            .bind(&names[..])
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    pool.close().await;
    (version, settings)
}
