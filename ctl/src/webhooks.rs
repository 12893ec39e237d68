//! `codigo-ctl webhooks secret --tenant T`: the `whsec_...` secret a tenant's receivers verify
//! deliveries with (Standard Webhooks), derived from the consumer's master key.
use clap::{Args, Subcommand};
use codigo_common::config::SigningKeys;
use codigo_common::webhook_secret::TenantSecret;
use secrecy::{ExposeSecret as _, SecretString};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Print a tenant's current webhook signing secret (`whsec_...`) for its receivers.
    Secret {
        /// The tenant (its API key's tenant); `''` for jobs without one (auth disabled).
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        keys: MasterKeys,
    },
}

/// The consumers' master keys, which tenants' and functions' secrets derive from.
#[derive(Debug, Args)]
pub struct MasterKeys {
    /// Print the secret under the previous master key instead (during a rotation).
    #[arg(long)]
    pub previous: bool,
    #[command(flatten)]
    pub keys: SigningKeys,
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is not set: give it the value the consumers run with (the Secret behind the chart's secrets.webhookSigningKey)")]
pub struct MissingKey(&'static str);

impl MasterKeys {
    /// The key to derive from: the previous one if asked for, else the current one.
    pub fn chosen(self) -> Result<SecretString, MissingKey> {
        if self.previous {
            self.keys
                .webhook_previous_signing_key
                .ok_or(MissingKey("CODIGO_WEBHOOK_PREVIOUS_SIGNING_KEY"))
        } else {
            self.keys
                .webhook_signing_key
                .ok_or(MissingKey("CODIGO_WEBHOOK_SIGNING_KEY"))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    #[error(transparent)]
    NoKey(#[from] MissingKey),
    #[error("tenant {0:?} is not a tenant name: 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-' (or '' for jobs without a tenant)")]
    BadTenant(String),
}

/// The line to print for `command`.
pub fn run(command: WebhooksCommand) -> Result<String, WebhooksError> {
    match command {
        WebhooksCommand::Secret { tenant, keys } => {
            let valid = tenant.len() <= 64
                && tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(WebhooksError::BadTenant(tenant));
            }
            let key = keys.chosen()?;
            Ok(TenantSecret::derive(key.expose_secret().as_bytes(), &tenant).whsec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(tenant: &str, previous: bool) -> Result<String, WebhooksError> {
        run(WebhooksCommand::Secret {
            tenant: tenant.into(),
            keys: MasterKeys {
                previous,
                keys: SigningKeys {
                    webhook_signing_key: Some("current-master-key-0001".into()),
                    webhook_previous_signing_key: Some("previous-master-key-001".into()),
                },
            },
        })
    }

    #[test]
    fn prints_the_secret_the_consumer_signs_with() {
        let printed = secret("acme", false).expect("secret");
        assert_eq!(
            printed,
            TenantSecret::derive(b"current-master-key-0001", "acme").whsec()
        );
        assert_ne!(printed, secret("globex", false).expect("secret"));
        assert_eq!(
            secret("acme", true).expect("secret"),
            TenantSecret::derive(b"previous-master-key-001", "acme").whsec()
        );
    }

    #[test]
    fn refuses_what_is_not_a_tenant_name() {
        assert!(matches!(
            secret("acme corp", false),
            Err(WebhooksError::BadTenant(_))
        ));
    }
}
