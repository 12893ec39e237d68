//! The project's real binaries (`codigo-producer`, `codigo-consumer`, `codigo-ctl`, ...) as
//! a test runs them: found where cargo built them, pointed at a `TestEnv`.
use std::path::PathBuf;
use std::process::Command;

use crate::child::ChildProcess;
use crate::TestEnv;

/// The directory cargo writes the workspace's binaries to: the test executable lives in
/// `<target>/<profile>/deps`, the binaries one level up.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps")
        .to_owned()
}

/// The path of binary `name`. Cargo builds a package's own binaries for its integration
/// tests; another package's binary is there after `cargo build --workspace` (or a
/// `cargo test --workspace`), and this says so when it is missing.
pub fn binary_path(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the test through `cargo test --workspace` (which builds every \
         binary) or `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A command for binary `name`, nothing else set.
pub fn command(name: &str) -> Command {
    Command::new(binary_path(name))
}

/// A command for binary `name` with exactly `vars` in its environment, nothing inherited.
pub fn command_with_only(name: &str, vars: &[(&str, String)]) -> Command {
    let mut command = command(name);
    command
        .env_clear()
        .envs(vars.iter().map(|(key, value)| (*key, value.as_str())));
    command
}

/// The directory of [`binary_dir`], after checking that every one of `names` is built there.
pub fn binary_dir_holding(names: &[&str]) -> PathBuf {
    for name in names {
        binary_path(name);
    }
    binary_dir()
}

impl TestEnv {
    /// A command for binary `name` with this test's NATS URL, namespace and database in its
    /// environment, logging JSON.
    pub fn command(&self, name: &str) -> Command {
        let mut command = command(name);
        command.envs(self.env_vars());
        command
    }

    /// Starts binary `name` with `args` against this test's namespace and database,
    /// listening on a free port (see [`ChildProcess::spawn_service`]).
    pub fn spawn_binary(&self, name: &str, args: &[&str]) -> ChildProcess {
        let mut command = self.command(name);
        command.args(args);
        ChildProcess::spawn_service(name, command)
    }

    /// Runs `codigo-ctl` with `args` against this test's namespace and database.
    pub async fn ctl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::from(self.command("codigo-ctl"))
            .args(args)
            .output()
            .await
            .expect("codigo-ctl runs")
    }

    /// Runs `codigo-ctl` with `args` and answers its standard output; panics, with both
    /// outputs, when it fails.
    pub async fn ctl_ok(&self, args: &[&str]) -> String {
        let output = self.ctl(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "codigo-ctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}
