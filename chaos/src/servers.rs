//! Private NATS and Postgres servers, started for one run so that the suite can kill them
//! without disturbing anyone, and removed afterwards whatever happened.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use codigo_testkit::process::{self, Probe, Process};
use tokio::process::Command;

use crate::ChaosError;

/// The run's working directory (server data, logs), removed when dropped unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> Result<Self, ChaosError> {
        let path =
            std::env::temp_dir().join(format!("codigo-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)
            .map_err(|e| ChaosError::io(format!("create {}", path.display()), e))?;
        // The Postgres server runs as the `postgres` user and must reach its data below here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ChaosError::io(format!("chmod {}", path.display()), e))?;
        Ok(Self { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("chaos: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A nats-server with JetStream, its store in the work directory.
pub struct Nats {
    binary: String,
    port: u16,
    store: PathBuf,
    log_dir: PathBuf,
    starts: u32,
    server: Option<Process>,
}

impl Nats {
    pub async fn start(dir: &Path) -> Result<Self, ChaosError> {
        let mut nats = Self {
            binary: process::nats_server()?,
            port: process::free_port()?,
            store: dir.join("nats-store"),
            log_dir: dir.to_owned(),
            starts: 0,
            server: None,
        };
        nats.spawn().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<(), ChaosError> {
        self.starts += 1;
        let log = self.log_dir.join(format!("nats-{}.log", self.starts));
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store);
        let server = self
            .server
            .insert(Process::spawn("nats-server", &mut command, &log)?);
        server
            .wait_ready(&Probe::tcp("127.0.0.1", self.port), STARTUP)
            .await?;
        Ok(())
    }

    /// `kill -9`: no flush, no goodbye to the clients.
    pub async fn kill(&mut self) -> Result<(), ChaosError> {
        if let Some(mut server) = self.server.take() {
            server.kill().await?;
        }
        Ok(())
    }

    /// Starts again on the same port and store directory.
    pub async fn restart(&mut self) -> Result<(), ChaosError> {
        self.spawn().await
    }
}

/// How long a server may take to listen.
pub(crate) const STARTUP: std::time::Duration = std::time::Duration::from_secs(15);

/// A private PostgreSQL cluster (initdb into the work directory), run as the `postgres` OS
/// user when the suite runs as root (Postgres refuses to run as root).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

fn newest_postgres_bin() -> Option<PathBuf> {
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    bins.sort();
    bins.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Postgres {
    pub async fn start(dir: &Path) -> Result<Self, ChaosError> {
        let bin = newest_postgres_bin().ok_or_else(|| {
            ChaosError::Setup(
                "no PostgreSQL server under /usr/lib/postgresql/*/bin; install it with \
                 `apt-get install postgresql`"
                    .into(),
            )
        })?;
        let root = dir.join("postgres");
        std::fs::create_dir_all(&root)
            .map_err(|e| ChaosError::io(format!("create {}", root.display()), e))?;
        let as_postgres = is_root();
        if as_postgres {
            let exists = nix::unistd::User::from_name("postgres").is_ok_and(|u| u.is_some());
            if !exists {
                process::run_blocking(std::process::Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "postgres",
                ]))
                .map_err(|e| ChaosError::Setup(format!("create the postgres OS user: {e}")))?;
            }
            process::run_blocking(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&root),
            )?;
        }
        let mut postgres = Self {
            bin,
            data: root.join("data"),
            log: root.join("postgres.log"),
            port: process::free_port()?,
            as_postgres,
            running: false,
        };
        let data = postgres.data.display().to_string();
        postgres
            .pg(
                "initdb",
                &[
                    "-D",
                    &data,
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                "initialise the cluster",
            )
            .await?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            postgres.port,
            root.display()
        );
        let log = postgres.log.display().to_string();
        postgres
            .pg(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
                "start the server",
            )
            .await?;
        postgres.running = true;
        Ok(postgres)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Crash-restart: every backend is killed without a checkpoint; the server recovers from
    /// its WAL when it comes back.
    pub async fn restart_immediate(&mut self) -> Result<(), ChaosError> {
        let data = self.data.display().to_string();
        let log = self.log.display().to_string();
        self.pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-m", "immediate", "restart"],
            "restart the server in immediate mode",
        )
        .await
    }

    async fn pg(&self, tool: &str, args: &[&str], what: &str) -> Result<(), ChaosError> {
        let mut command = self.pg_command(tool);
        command.args(args);
        process::run(&mut Command::from(command), PG_TIMEOUT)
            .await
            .map(drop)
            .map_err(|e| {
                ChaosError::Setup(format!(
                    "Postgres: could not {what}: {e}; see {}",
                    self.log.display()
                ))
            })
    }

    /// A Postgres tool, run as the `postgres` OS user when the suite runs as root.
    fn pg_command(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }
}

/// Longest a `pg_ctl` start, restart or `initdb` may take.
const PG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
