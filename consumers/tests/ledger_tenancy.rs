//! Ledger accounts belong to a tenant, against real NATS and Postgres: two tenants naming the
//! same account keep two balances, through the gateway and through grouped transactions; and
//! the migration that added the tenant keeps the rows written before it.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use codigo_testkit::http::post_until_accepted;
use codigo_testkit::{envelope, flags, TestConsumer, TestEnv, TestProducer};
use serde_json::json;
use uuid::Uuid;

const ALPHA_TOKEN: &str = "tenancy-alpha-token-0001";
const BETA_TOKEN: &str = "tenancy-beta-token-00001";

async fn start_consumer(env: &TestEnv) -> TestConsumer {
    TestConsumer::spawn(env, &flags("--job-types ledger.post --concurrency 16")).await
}

async fn start_gateway(env: &TestEnv) -> (SocketAddr, TestProducer) {
    let keys = format!("alpha:{ALPHA_TOKEN},beta:{BETA_TOKEN}");
    let gateway = TestProducer::spawn(env, &["--api-keys", &keys]).await;
    (gateway.addr, gateway)
}

/// Publishes a `ledger.post` job straight to JetStream, as an upstream system may.
async fn publish(env: &TestEnv, tenant: Option<&str>, account: &str, amount_cents: i64) {
    let payload = json!({"account": account, "amount_cents": amount_cents, "currency": "EUR"});
    let mut job = envelope(Uuid::now_v7(), "ledger.post", "", payload);
    match tenant {
        Some(tenant) => job["tenant"] = json!(tenant),
        None => {
            job.as_object_mut().expect("envelope").remove("tenant");
        }
    }
    env.publish_envelope(&job).await;
}

async fn submit(http: &reqwest::Client, addr: SocketAddr, token: &str, amount_cents: i64) {
    let job = json!({"type": "ledger.post",
        "payload": {"account": "shared", "amount_cents": amount_cents, "currency": "EUR"}});
    post_until_accepted(http, &format!("http://{addr}/v1/jobs"), token, &job).await;
}

async fn succeeded(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

async fn balances(env: &TestEnv) -> BTreeMap<(String, String), i64> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT tenant, account, balance_cents FROM account_balances")
            .fetch_all(&env.pool)
            .await
            .expect("balances");
    rows.into_iter().map(|(t, a, b)| ((t, a), b)).collect()
}

fn key(tenant: &str, account: &str) -> (String, String) {
    (tenant.to_owned(), account.to_owned())
}

#[tokio::test]
async fn two_tenants_posting_to_one_account_name_keep_separate_balances() {
    let env = TestEnv::new().await;
    // A backlog in place before the consumer starts arrives in groups: the grouped
    // transaction sees both tenants' jobs for the same account name at once.
    for _ in 0..60 {
        publish(&env, Some("alpha"), "shared", 1_000).await;
        publish(&env, Some("beta"), "shared", -7).await;
    }
    // Published without a tenant: the tenant-less ('') account.
    publish(&env, None, "shared", 5).await;
    let consumer = start_consumer(&env).await;
    env.eventually("the backlog applied", Duration::from_secs(60), || async {
        succeeded(&env).await == 121
    })
    .await;

    // Through the gateway, where the API key decides the tenant; one job at a time.
    let (addr, gateway) = start_gateway(&env).await;
    let http = reqwest::Client::new();
    submit(&http, addr, ALPHA_TOKEN, 1).await;
    env.eventually("alpha's job applied", Duration::from_secs(60), || async {
        succeeded(&env).await == 122
    })
    .await;
    submit(&http, addr, BETA_TOKEN, -1).await;
    env.eventually("beta's job applied", Duration::from_secs(60), || async {
        succeeded(&env).await == 123
    })
    .await;

    let want = BTreeMap::from([
        (key("alpha", "shared"), 60_001),
        (key("beta", "shared"), -421),
        (key("", "shared"), 5),
    ]);
    assert_eq!(balances(&env).await, want);
    let entries: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT tenant, count(*), sum(amount_cents)::bigint FROM ledger_entries
          GROUP BY tenant ORDER BY tenant",
    )
    .fetch_all(&env.pool)
    .await
    .expect("entries");
    assert_eq!(
        entries,
        vec![
            (String::new(), 1, 5),
            ("alpha".to_owned(), 61, 60_001),
            ("beta".to_owned(), 61, -421)
        ]
    );
    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

/// The SQL of the first migration, applied on its own from a directory holding only it, as a
/// database set up by the release before tenants had accounts.
async fn migrate_to_0001(env: &TestEnv) {
    let dir = std::env::temp_dir().join(format!("codigo-0001-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../common/migrations/0001_init.sql"
        ),
        dir.join("0001_init.sql"),
    )
    .expect("copy 0001");
    let migrator = sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .expect("0001 loads");
    migrator.run(&env.pool).await.expect("0001 applies");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[tokio::test]
async fn migrating_keeps_entries_and_balances_written_before_tenants() {
    let env = TestEnv::bare().await;
    migrate_to_0001(&env).await;
    let (a1, a2, b1, orphan, untenanted) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for (id, tenant) in [
        (a1, Some("alpha")),
        (a2, Some("alpha")),
        (b1, Some("beta")),
        (untenanted, None),
    ] {
        sqlx::query(
            "INSERT INTO jobs (id, type, status, attempts, tenant, created_at)
             VALUES ($1, 'ledger.post', 'succeeded', 1, $2, now())",
        )
        .bind(id)
        .bind(tenant)
        .execute(&env.pool)
        .await
        .expect("old job row");
    }
    // `orphan` has an entry but no job row (rows deleted by hand, say).
    for (id, account, cents) in [
        (a1, "shared", 100),
        (a2, "shared", 50),
        (b1, "shared", -30),
        (orphan, "shared", 7),
        (untenanted, "solo", 9),
        (b1, "ignored-duplicate", 1),
    ] {
        sqlx::query(
            "INSERT INTO ledger_entries (job_id, account, currency, amount_cents, memo)
             VALUES ($1, $2, 'EUR', $3, 'old') ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(id)
        .bind(account)
        .bind(cents)
        .execute(&env.pool)
        .await
        .expect("old entry");
    }
    // Old balances, one of them with an opening amount no entry explains (+1000), one with
    // no entry at all.
    for (account, cents) in [("shared", 127 + 1_000), ("solo", 9), ("opening", 42)] {
        sqlx::query(
            "INSERT INTO account_balances (account, currency, balance_cents) VALUES ($1, 'EUR', $2)",
        )
        .bind(account)
        .bind(cents)
        .execute(&env.pool)
        .await
        .expect("old balance");
    }

    codigo_common::db::migrate(&env.pool)
        .await
        .expect("the later migrations apply over old rows");
    codigo_common::db::check_migrated(&env.pool)
        .await
        .expect("the schema is current");

    let entries: Vec<(Uuid, String, String, i64)> =
        sqlx::query_as("SELECT job_id, tenant, account, amount_cents FROM ledger_entries")
            .fetch_all(&env.pool)
            .await
            .expect("entries");
    let entries: BTreeMap<Uuid, (String, String, i64)> = entries
        .into_iter()
        .map(|(id, t, a, c)| (id, (t, a, c)))
        .collect();
    let entry =
        |tenant: &str, account: &str, cents: i64| (tenant.to_owned(), account.to_owned(), cents);
    assert_eq!(
        entries,
        BTreeMap::from([
            (a1, entry("alpha", "shared", 100)),
            (a2, entry("alpha", "shared", 50)),
            (b1, entry("beta", "shared", -30)),
            (orphan, entry("", "shared", 7)),
            (untenanted, entry("", "solo", 9)),
        ])
    );
    // Per account, the old total is kept: 1127 = 150 + (-30) + (7 + 1000).
    assert_eq!(
        balances(&env).await,
        BTreeMap::from([
            (key("alpha", "shared"), 150),
            (key("beta", "shared"), -30),
            (key("", "shared"), 1_007),
            (key("", "solo"), 9),
            (key("", "opening"), 42),
        ])
    );
    // Balances are keyed by tenant now: the same account of another tenant is another row.
    env.insert_balance("gamma", "shared", "EUR", 1).await;
    let tenant_is_required = sqlx::query(
        "INSERT INTO ledger_entries (job_id, account, currency, amount_cents)
         VALUES ($1, 'shared', 'EUR', 1)",
    )
    .bind(Uuid::now_v7())
    .execute(&env.pool)
    .await
    .expect_err("an entry without a tenant");
    assert_eq!(
        tenant_is_required
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("23502"),
        "{tenant_is_required}"
    );
    env.cleanup().await;
}
