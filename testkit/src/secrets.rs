//! Secrets a test hands to a service, and the check that the service never shows them.

/// One secret per kind, `<kind>-<unique>`, and the unique part for the run's other names:
/// unique, so that a secret found in output can only have come from this run.
pub fn unique_secrets<const N: usize>(kinds: [&str; N]) -> (String, [String; N]) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let secrets = kinds.map(|kind| format!("{kind}-{unique}"));
    (unique, secrets)
}

/// Fails if `text`, what `what` showed, holds any of `secrets`.
pub fn assert_no_secret<S: AsRef<str>>(what: &str, text: &str, secrets: &[S]) {
    for secret in secrets {
        let secret = secret.as_ref();
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}
