//! The producer and consumers as real processes: started with their environment on free
//! ports, watched for readiness and memory, stopped with SIGTERM (SIGKILL if they hang or
//! when dropped), so that no benchmark leaves a process behind.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::error::LoadError;

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    pid: u32,
    pub started: Instant,
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rss {
    pub current_kib: u64,
    /// High-water mark since the process started.
    pub peak_kib: u64,
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> Result<u16, LoadError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LoadError::Invalid(format!("no free local port: {e}")))
}

impl Proc {
    /// Starts `bin` with `env` added to ours; stdout and stderr go to `log`.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, LoadError> {
        let file = std::fs::File::create(log).map_err(|source| LoadError::Write {
            path: log.to_owned(),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| LoadError::Write {
            path: log.to_owned(),
            source,
        })?;
        let started = Instant::now();
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LoadError::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
            pid,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn failed(&self, detail: impl Into<String>) -> LoadError {
        LoadError::Process {
            name: self.name.clone(),
            detail: detail.into(),
            log: self.log.clone(),
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), LoadError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(format!("exited early ({status})"))),
            Err(e) => Err(self.failed(format!("cannot be watched: {e}"))),
        }
    }

    /// Waits until `GET url` answers 200.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<(), LoadError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Ok(response) = http.get(url).timeout(Duration::from_secs(1)).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failed(format!("not ready at {url} after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory from /proc (Linux); zero elsewhere.
    pub fn rss(&self) -> Rss {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        Rss {
            current_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // No signal API without unsafe code here: `kill` does it.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = %self.name, "did not stop after SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// Runs `bin args` to completion (e.g. `codigo-ctl setup`), failing with its output.
pub async fn run_to_end(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), LoadError> {
    let child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| LoadError::Invalid(format!("{} {} timed out", bin.display(), args.join(" "))))?
        .map_err(|source| LoadError::Spawn {
            bin: bin.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LoadError::Invalid(format!(
            "{} {} failed ({}): {}",
            bin.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// CPU time a process has used so far (all its threads, user and system), from
/// `/proc/<pid>/stat`; `None` once it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Processes whose command name is `comm` and whose command line contains every one of
/// `needles`.
pub fn pids_of(comm: &str, needles: &[&str]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if name.trim() != comm {
                return false;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .unwrap_or_default();
            needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu_time() {
        let pid = std::process::id();
        // Burn a little CPU so that at least one tick is counted.
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(cpu_time(pid).is_some());
        assert!(cpu_time(u32::MAX).is_none());
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert!(pids_of(comm.trim(), &[]).contains(&pid));
    }
}
