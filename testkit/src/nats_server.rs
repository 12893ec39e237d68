//! A private nats-server of the pinned release, for tests that need a server of their own:
//! users and permissions, TLS, limits, or faults (paused, killed and restarted).
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::child::ChildProcess;
use crate::scratch::{free_port, ScratchDir};

/// A nats-server with JetStream on a free port and a store of its own; killed and its
/// directory removed on drop.
pub struct NatsServer {
    process: ChildProcess,
    dir: ScratchDir,
    port: u16,
}

impl NatsServer {
    /// `config` is nats-server configuration added after the listen and JetStream settings;
    /// `$DIR` in it stands for the server's directory.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[], &[])
    }

    /// One user with a password for every client.
    pub fn with_user(user: &str, password: &str) -> Self {
        Self::start(&format!(
            "authorization {{ user: {user:?}, password: {password:?} }}"
        ))
    }

    /// As [`start`](Self::start), with `files` written into the server's directory first
    /// (certificates, included configuration) and `env` in the server's environment.
    pub fn start_with(config: &str, files: &[(&str, String)], env: &[(&str, String)]) -> Self {
        let port = free_port();
        let dir = ScratchDir::new("nats");
        for (name, content) in files {
            dir.write(name, content);
        }
        let body = config.replace("$DIR", &dir.path().display().to_string());
        let conf = dir.write(
            "server.conf",
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{body}\n",
                dir.join("js")
            ),
        );
        let mut command = Command::new(crate::nats_server_binary());
        command
            .arg("-c")
            .arg(conf)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())));
        let mut server = Self {
            process: ChildProcess::spawn("nats-server", command),
            dir,
            port,
        };
        server.wait_listening();
        server
    }

    /// Until the server sends its INFO line; panics with its log if it exits or never does.
    fn wait_listening(&mut self) {
        use std::io::Read;
        for _ in 0..300 {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut info = [0u8; 4];
                if stream.read_exact(&mut info).is_ok() && &info == b"INFO" {
                    return;
                }
            }
            if let Some(status) = self.process.try_exit() {
                panic!(
                    "nats-server exited with {status} (the pinned release is installed by \
                     `make test-tools`):\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "nats-server did not answer on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `name` in the server's directory (where [`start_with`](Self::start_with) wrote files).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        self.process.output()
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.process.resume();
    }

    /// SIGKILL (whatever it had not read from its sockets is lost), then the same server
    /// again on its port and store.
    pub fn kill_and_restart(&mut self) {
        self.process.restart();
        self.wait_listening();
    }
}
