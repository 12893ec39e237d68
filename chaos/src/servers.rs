//! Private NATS and Postgres servers, started for one run so that the suite can kill them
//! without disturbing anyone, and removed afterwards whatever happened.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::ChaosError;

/// The nats-server the suite runs: `CODIGO_NATS_SERVER`, which `make chaos` sets to the pinned
/// release (deploy/nats/requirements.txt), else the first `nats-server` on `PATH`.
pub fn nats_server() -> String {
    std::env::var("CODIGO_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// A port nobody listens on right now, for a process started a moment later. It is taken
/// below Linux's ephemeral range (32768 and up): a port the kernel picks for us is one it may
/// hand to any outgoing connection on the machine in that moment, and the restarted process
/// then fails to bind it.
pub fn free_port() -> Result<u16, ChaosError> {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| ChaosError::io("pick a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ChaosError::io("pick a free port", e))
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn wait_port(port: u16, what: &str, log: &Path) -> Result<(), ChaosError> {
    for _ in 0..300 {
        if port_open(port).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ChaosError::Setup(format!(
        "{what} did not start listening on 127.0.0.1:{port} within 15 s; see {}",
        log.display()
    )))
}

pub(crate) fn log_file(path: &Path) -> Result<(Stdio, Stdio), ChaosError> {
    let file = std::fs::File::create(path)
        .map_err(|e| ChaosError::io(format!("create {}", path.display()), e))?;
    let copy = file
        .try_clone()
        .map_err(|e| ChaosError::io(format!("open {}", path.display()), e))?;
    Ok((Stdio::from(file), Stdio::from(copy)))
}

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
    port: u16,
    store: PathBuf,
    log_dir: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl Nats {
    pub async fn start(dir: &Path) -> Result<Self, ChaosError> {
        let binary = nats_server();
        let runs = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !runs {
            return Err(ChaosError::Setup(format!(
                "{binary} does not run; `make chaos` installs the pinned nats-server (deploy/nats/requirements.txt)"
            )));
        }
        let mut nats = Self {
            port: free_port()?,
            store: dir.join("nats-store"),
            log_dir: dir.to_owned(),
            starts: 0,
            child: None,
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
        let (out, err) = log_file(&log)?;
        let binary = nats_server();
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ChaosError::io(format!("start {binary}"), e))?;
        self.child = Some(child);
        wait_port(self.port, "nats-server", &log).await
    }

    /// `kill -9`: no flush, no goodbye to the clients.
    pub async fn kill(&mut self) -> Result<(), ChaosError> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|e| ChaosError::io("kill nats-server", e))?;
        }
        Ok(())
    }

    /// Starts again on the same port and store directory.
    pub async fn restart(&mut self) -> Result<(), ChaosError> {
        self.spawn().await
    }
}

impl Drop for Nats {
    /// Waits for the server to be gone, so that it writes nothing more into the store while
    /// the work directory is being removed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

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
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
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
            let exists = std::process::Command::new("id")
                .arg("postgres")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !exists {
                run_std(
                    std::process::Command::new("useradd").args([
                        "--system",
                        "--no-create-home",
                        "postgres",
                    ]),
                    "create the postgres OS user",
                )?;
            }
            run_std(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&root),
                "give the Postgres directory to the postgres user",
            )?;
        }
        let mut postgres = Self {
            bin,
            data: root.join("data"),
            log: root.join("postgres.log"),
            port: free_port()?,
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
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| ChaosError::io(format!("run {}", program.display()), e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ChaosError::Setup(format!(
                "Postgres: could not {what} ({} exited with {}): {}{}; see {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log.display()
            )))
        }
    }
}

fn run_std(command: &mut std::process::Command, what: &str) -> Result<(), ChaosError> {
    let output = command
        .output()
        .map_err(|e| ChaosError::io(what.to_owned(), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Setup(format!(
            "could not {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
