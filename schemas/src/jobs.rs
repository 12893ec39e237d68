//! The built-in job kinds. A new kind is a payload type, its `JobKind` impl and its schema file
//! under `schemas/jobs/`, added to [`KINDS`].
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::{kind, JobKind, KindInfo};

/// Every registered job kind; the registry is built from this list.
pub const KINDS: &[KindInfo] = &[kind::<LedgerPost>(), kind::<WebhookDeliver>()];

pub const LEDGER_POST: &str = LedgerPost::NAME;
pub const WEBHOOK_DELIVER: &str = WebhookDeliver::NAME;

/// `ledger.post` v1 payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerPost {
    pub account: String,
    pub amount_cents: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

impl JobKind for LedgerPost {
    const NAME: &'static str = "ledger.post";
    const VERSION: u32 = 1;
    const SCHEMA: &'static str = include_str!("../jobs/ledger.post.v1.schema.json");
}

/// `webhook.deliver` v1 payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliver {
    pub url: String,
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

impl JobKind for WebhookDeliver {
    const NAME: &'static str = "webhook.deliver";
    const VERSION: u32 = 1;
    const SCHEMA: &'static str = include_str!("../jobs/webhook.deliver.v1.schema.json");
}
