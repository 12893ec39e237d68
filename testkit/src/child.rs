//! A child process of the test (a nats-server, a real service binary, a fixture): its output
//! captured in files (a pipe nobody reads could stall it), signals sent through `nix`, a
//! graceful stop on request and SIGKILL on drop, so a failed test leaves nothing running.
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::scratch::{free_port, ScratchDir};

/// How a process ended, and everything it wrote (stdout, then stderr).
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub output: String,
}

pub struct ChildProcess {
    name: String,
    command: Command,
    child: Option<std::process::Child>,
    logs: ScratchDir,
    http: Option<SocketAddr>,
}

impl ChildProcess {
    /// Starts `command`, stdin closed, stdout and stderr into files of its own.
    pub fn spawn(name: &str, command: Command) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            command,
            child: None,
            logs: ScratchDir::new(&format!("{name}-logs")),
            http: None,
        };
        process.start();
        process
    }

    /// A service: `CODIGO_HTTP_ADDR` set to a free port on 127.0.0.1, where
    /// [`url`](Self::url) and [`wait_ready`](Self::wait_ready) look.
    pub fn spawn_service(name: &str, mut command: Command) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        command.env("CODIGO_HTTP_ADDR", addr.to_string());
        let mut process = Self::spawn(name, command);
        process.http = Some(addr);
        process
    }

    fn start(&mut self) {
        let log = |file: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(file))
                .expect("open a log file")
        };
        let child = self
            .command
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "{} does not start ({error}): {:?}",
                    self.name,
                    self.command.get_program()
                )
            });
        self.child = Some(child);
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("the process runs");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
    }

    /// Sends `signal`; panics if the process is gone.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal)
            .unwrap_or_else(|error| panic!("{signal} to {}: {error}", self.name));
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// SIGTERM, then waits up to `limit` for the process to exit, blocking the thread; SIGKILL
    /// if it has not. For `Drop` of fixtures that clean up after themselves on SIGTERM.
    pub fn stop_blocking(&mut self, limit: Duration) {
        if self.child.is_some() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + limit;
            while self.try_exit().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then the same command again (same arguments, log files appended).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (30 s at most) for the process to exit by itself, e.g. after a start-up failure.
    pub async fn exited(mut self) -> Exited {
        match self.wait(Duration::from_secs(30)).await {
            Some(status) => Exited {
                status,
                output: self.output(),
            },
            None => panic!("{} did not exit:\n{}", self.name, self.output()),
        }
    }

    /// SIGTERM, then waits (30 s at most) for a graceful exit.
    pub async fn stop(self) -> Exited {
        self.terminate();
        self.exited().await
    }

    pub fn stdout(&self) -> String {
        self.logs.read("stdout")
    }

    /// Everything written so far: stdout, then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.logs.read("stderr"))
    }

    /// Waits (20 s at most) until the output contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        for _ in 0..400 {
            if self.output().contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never logged {text:?}:\n{}", self.name, self.output());
    }

    /// Where a service started with [`spawn_service`](Self::spawn_service) listens.
    pub fn addr(&self) -> SocketAddr {
        self.http.expect("started with spawn_service")
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self) {
        crate::in_process::wait_ready(&self.name, self.addr()).await;
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl crate::Service for ChildProcess {
    fn url(&self, path: &str) -> String {
        ChildProcess::url(self, path)
    }
}
