//! Fault injection exists only in the `chaos` build: the default build, which is what ships,
//! refuses CODIGO_FAULTS with an error that says what to do.
use clap::Parser;
use codigo_consumer::Config;

fn with_faults(spec: &str) -> Config {
    Config::try_parse_from([
        "codigo-consumer",
        "--job-types",
        "ledger.post",
        "--faults",
        spec,
    ])
    .expect("parses")
}

#[cfg(not(feature = "chaos"))]
#[test]
fn the_default_build_refuses_fault_injection() {
    let error = with_faults("crash_after_commit=0.5,memo")
        .validate()
        .expect_err("no fault injection in the default build");
    let message = error.to_string();
    assert!(message.contains("CODIGO_FAULTS"), "{message}");
    assert!(message.contains("unset CODIGO_FAULTS"), "{message}");
    assert!(with_faults("").validate().is_ok());
}

#[cfg(feature = "chaos")]
#[test]
fn the_chaos_build_accepts_fault_injection() {
    assert!(with_faults("crash_after_commit=0.5,memo")
        .validate()
        .is_ok());
    assert!(with_faults("explode").validate().is_err());
}
