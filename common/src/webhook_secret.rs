//! Per-tenant webhook secrets and signatures, per the Standard Webhooks specification.
//!
//! Secrets are derived, not stored: a tenant's secret is HMAC-SHA256(master key, label +
//! tenant), so the consumer signs and `codigo-ctl webhooks secret --tenant T` prints it from
//! the same master key (`CODIGO_WEBHOOK_SIGNING_KEY`) with no table to keep in step, and one
//! tenant's secret tells nothing about another's. Rotating the master key rotates every
//! tenant's secret; during a rotation the previous key stays configured and deliveries carry
//! a signature from each, so receivers move to the new secret at their own pace.
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation: a derived secret is never the MAC of anything else we compute.
const LABEL: &[u8] = b"codigo webhook secret v1\0";
/// A function's secret is derived under its own label: no tenant named like a job type shares
/// a function's secret.
const FUNCTION_LABEL: &[u8] = b"codigo function secret v1\0";

/// The secret of jobs without a tenant (authentication disabled, or published straight to
/// JetStream): `--tenant ''`. Never a real tenant name, which is at least one character.
pub const NO_TENANT: &str = "";

/// One tenant's signing secret: 32 bytes, shown to people as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantSecret([u8; 32]);

impl std::fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantSecret([REDACTED])")
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

impl TenantSecret {
    /// The secret of `tenant` under `master_key`.
    pub fn derive(master_key: &[u8], tenant: &str) -> Self {
        let mut mac = mac(master_key);
        mac.update(LABEL);
        mac.update(tenant.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// The secret an HTTP function verifies its invocations with (`codigo-ctl types secret`).
    pub fn for_function(master_key: &[u8], job_type: &str) -> Self {
        let mut mac = mac(master_key);
        mac.update(FUNCTION_LABEL);
        mac.update(job_type.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// `whsec_<base64>`, the form a receiver configures.
    pub fn whsec(&self) -> String {
        format!("whsec_{}", STANDARD.encode(self.0))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        sign_with(&self.0, id, timestamp, body)
    }
}

fn sign_with(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        assert_eq!(
            sign_with(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn tenants_get_distinct_stable_secrets() {
        let a = TenantSecret::derive(b"master-key-0123456789", "acme");
        let b = TenantSecret::derive(b"master-key-0123456789", "globex");
        assert_ne!(a, b);
        assert_eq!(a, TenantSecret::derive(b"master-key-0123456789", "acme"));
        assert_ne!(a, TenantSecret::derive(b"other-master-key-0000", "acme"));
        assert!(a.whsec().starts_with("whsec_"));
        assert!(!format!("{a:?}").contains(&a.whsec()[6..]));
        let function = TenantSecret::for_function(b"master-key-0123456789", "acme");
        assert_ne!(function, a, "a function's secret is never a tenant's");
    }
}
