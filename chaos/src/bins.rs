//! The binaries of a chaos run. Fault injection (`CODIGO_FAULTS`) exists only in a consumer
//! built with its `chaos` feature, which no deployed build has: the tests build one.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ChaosError;

const BINARIES: [&str; 3] = ["codigo-producer", "codigo-consumer", "codigo-ctl"];

/// Builds the producer, ctl and the consumer with fault injection in the profile of the
/// running test executable (target/<profile>/deps/..), copies them into
/// target/<profile>/chaos-bin and returns that directory. The consumer's default build is
/// put back afterwards, for the tests that run it.
pub fn build_for_tests() -> Result<PathBuf, ChaosError> {
    let exe = std::env::current_exe().map_err(|e| ChaosError::io("test executable path", e))?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or_else(|| {
        ChaosError::Setup("the test executable is not in target/<profile>/deps".into())
    })?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| ChaosError::Setup("the profile directory has no target directory".into()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| ChaosError::Setup("the chaos crate is not in a workspace".into()))?;
    let cargo = |args: &[&str]| -> Result<(), ChaosError> {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace)
            .args(["build", "--profile", &profile, "--target-dir"])
            .arg(target_dir)
            .args(args)
            .status()
            .map_err(|e| ChaosError::io("running cargo build", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(ChaosError::Setup(format!(
                "cargo build {} failed ({status}); fix the build first",
                args.join(" ")
            )))
        }
    };
    // The same packages both times: their shared dependencies then build with one feature
    // set, and the second build only relinks the consumer.
    let packages = [
        "-p",
        "codigo-producer",
        "-p",
        "codigo-ctl",
        "-p",
        "codigo-consumer",
    ];
    cargo(&[&packages[..], &["--features", "codigo-consumer/chaos"]].concat())?;
    let bin_dir = profile_dir.join("chaos-bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| ChaosError::io(format!("creating {}", bin_dir.display()), e))?;
    for name in BINARIES {
        let (from, to) = (profile_dir.join(name), bin_dir.join(name));
        // Removed first: copying over a binary a process still runs fails (ETXTBSY).
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to)
            .map_err(|e| ChaosError::io(format!("copying {}", from.display()), e))?;
    }
    cargo(&packages)?;
    Ok(bin_dir)
}
