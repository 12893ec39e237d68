//! Database errors are judged by their SQLSTATE, as real Postgres produces them: transient
//! errors and a broken deployment hold jobs, an error in a job's data fails that job only.
use std::time::Duration;

use codigo_consumer::db_failure::{DbErrorClass, DbFailure};
use codigo_testkit::{
    flags, metric_value, postgres_server_url, run_blocking, TestConsumer, TestEnv, SHORT_RETRIES,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// The class and SQLSTATE the consumer gives `error`.
fn judged(error: sqlx::Error) -> (DbErrorClass, Option<String>) {
    let failure = DbFailure::from(error);
    (failure.class(), failure.sqlstate().map(str::to_owned))
}

/// Asserts that the consumer judges `error` (from `what`) of `class`, with SQLSTATE `code`.
fn assert_judged(what: &str, error: sqlx::Error, class: DbErrorClass, code: &str) {
    assert_eq!(judged(error), (class, Some(code.to_owned())), "{what}");
}

async fn failing(conn: &mut PgConnection, sql: &str) -> sqlx::Error {
    match conn.execute(sql).await {
        Ok(_) => panic!("{sql} succeeded"),
        Err(error) => error,
    }
}

/// A login role without superuser rights (superusers skip privilege checks), dropped with the
/// test even when it fails. Declared before the `TestEnv` so that the database, which holds
/// the role's grants, is dropped first.
struct Role {
    name: String,
    admin: String,
}

impl Role {
    async fn create() -> Self {
        let name = format!("codigo_role_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let admin = format!("{}/postgres", postgres_server_url());
        let mut conn = PgConnection::connect(&admin).await.expect("admin");
        conn.execute(format!("CREATE ROLE {name} LOGIN").as_str())
            .await
            .expect("create role");
        Self { name, admin }
    }

    /// `env`'s database URL, logging in as this role.
    fn url(&self, env: &TestEnv) -> String {
        let (scheme, rest) = env.database_url.split_once("://").expect("URL");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}@{host}", self.name)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        run_blocking(async move {
            if let Ok(mut conn) = PgConnection::connect(&admin).await {
                let _ = conn
                    .execute(format!("DROP ROLE IF EXISTS {name}").as_str())
                    .await;
            }
        });
    }
}

#[tokio::test]
async fn real_sqlstates_are_judged_by_class() {
    let role = Role::create().await;
    let env = TestEnv::new().await;
    let mut conn = env.connect().await;

    // Class 22 and 23: the job's data. 0x00 in jsonb is what a `\u0000` in a payload meets.
    for (sql, code) in [
        ("SELECT 1 / 0", "22012"),
        ("SELECT 9223372036854775807::bigint + 1", "22003"),
        (r#"SELECT '"\u0000"'::jsonb"#, "22P05"),
        (
            "INSERT INTO jobs (id, type, status, created_at) VALUES \
             ('00000000-0000-0000-0000-000000000001', 't', 'running', now()), \
             ('00000000-0000-0000-0000-000000000001', 't', 'running', now())",
            "23505",
        ),
    ] {
        let error = failing(&mut conn, sql).await;
        assert_judged(sql, error, DbErrorClass::Job, code);
    }

    // Class 42: our own statements do not fit the database.
    for (sql, code) in [
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELECT no_such_column FROM jobs", "42703"),
    ] {
        let error = failing(&mut conn, sql).await;
        assert_judged(sql, error, DbErrorClass::Deployment, code);
    }
    conn.execute(format!("GRANT USAGE ON SCHEMA public TO {}", role.name).as_str())
        .await
        .expect("grant usage");
    let mut unprivileged = PgConnection::connect(&role.url(&env))
        .await
        .expect("connect as the role");
    let error = failing(&mut unprivileged, "SELECT count(*) FROM jobs").await;
    assert_judged(
        "a table without privileges",
        error,
        DbErrorClass::Deployment,
        "42501",
    );
    unprivileged.close().await.ok();

    // Class 57: operator intervention, a statement timeout.
    let error = failing(&mut conn, "SET statement_timeout = 50; SELECT pg_sleep(5)").await;
    assert_judged(
        "a statement timeout",
        error,
        DbErrorClass::Transient,
        "57014",
    );
    conn.execute("SET statement_timeout = 0")
        .await
        .expect("reset");

    // 40001: two serializable transactions that read what the other writes.
    conn.execute("CREATE TABLE rw (v int)")
        .await
        .expect("table");
    let mut other = env.connect().await;
    for c in [&mut conn, &mut other] {
        c.execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM rw")
            .await
            .expect("begin");
    }
    // Postgres may refuse the second write or the second commit.
    let mut refused = Vec::new();
    for (first, sql) in [
        (true, "INSERT INTO rw VALUES (1)"),
        (false, "INSERT INTO rw VALUES (2)"),
        (true, "COMMIT"),
        (false, "COMMIT"),
    ] {
        let c = if first { &mut conn } else { &mut other };
        if let Err(error) = c.execute(sql).await {
            refused.push(error);
        }
    }
    let error = refused
        .into_iter()
        .next()
        .expect("one of the transactions is refused");
    assert_judged(
        "a serialization failure",
        error,
        DbErrorClass::Transient,
        "40001",
    );

    // 40P01: two transactions that lock two rows in opposite orders.
    conn.execute("INSERT INTO rw VALUES (10), (20)")
        .await
        .expect("rows");
    for (c, row) in [(&mut conn, 10), (&mut other, 20)] {
        c.execute(format!("BEGIN; UPDATE rw SET v = v WHERE v = {row}").as_str())
            .await
            .expect("first lock");
    }
    let (a, b) = tokio::join!(
        conn.execute("UPDATE rw SET v = v WHERE v = 20"),
        other.execute("UPDATE rw SET v = v WHERE v = 10"),
    );
    let error = a.err().or(b.err()).expect("Postgres breaks the deadlock");
    assert_judged("a deadlock", error, DbErrorClass::Transient, "40P01");
    conn.execute("ROLLBACK").await.ok();
    other.execute("ROLLBACK").await.ok();

    // Errors that never reach a statement: a full pool, a closed pool, no server.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect(&env.database_url)
        .await
        .expect("pool");
    let held = pool.acquire().await.expect("the only connection");
    let error = sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect_err("pool is empty");
    assert_eq!(judged(error), (DbErrorClass::Transient, None));
    drop(held);
    pool.close().await;
    let error = sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect_err("pool is closed");
    assert_eq!(judged(error), (DbErrorClass::Transient, None));
    let error = PgConnection::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(judged(error), (DbErrorClass::Transient, None));

    conn.close().await.ok();
    other.close().await.ok();
    env.cleanup().await;
}

async fn applied(env: &TestEnv, account: &str) -> i64 {
    env.ledger_entries(account).await
}

async fn dead_letters(env: &TestEnv) -> u64 {
    env.dead_letter_count().await
}

/// `codigo_consumer_database_errors_total{class="deployment"}` on the consumer's page.
async fn deployment_errors(consumer: &TestConsumer) -> f64 {
    let page = consumer.metrics().await;
    metric_value(
        &page,
        "codigo_consumer_database_errors_total",
        &[("class", "deployment")],
    )
    .unwrap_or_else(|| panic!("no deployment series on the page:\n{page}"))
}

#[tokio::test]
async fn jobs_are_held_while_privileges_are_revoked_and_finish_once_granted() {
    let role = Role::create().await;
    let env = TestEnv::new().await;
    let mut admin = env.connect().await;
    let grant = format!(
        "GRANT USAGE ON SCHEMA public TO {r}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
        r = role.name
    );
    admin.execute(grant.as_str()).await.expect("grants");

    let database_url = role.url(&env);
    let settings = format!(
        "{SHORT_RETRIES} --job-types ledger.post --database-url {database_url} \
         --max-deliver 3 --ack-wait-secs 3 --backoff-secs 3"
    );
    let consumer = TestConsumer::spawn(&env, &flags(&settings)).await;
    env.publish_ledger_jobs("warm-up", 3).await;
    env.eventually("warm-up applied", Duration::from_secs(60), || async {
        applied(&env, "warm-up").await == 3
    })
    .await;
    assert_eq!(deployment_errors(&consumer).await, 0.0);

    // A grants change gone wrong: every ledger write now fails with 42501.
    admin
        .execute(format!("REVOKE INSERT ON ledger_entries FROM {}", role.name).as_str())
        .await
        .expect("revoke");
    let ids = env.publish_ledger_jobs("held", 5).await;
    env.eventually(
        "the deployment error counted",
        Duration::from_secs(60),
        || async { deployment_errors(&consumer).await > 0.0 },
    )
    .await;
    // Longer than the ack wait and MaxDeliver × backoff: held jobs keep their first delivery.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(applied(&env, "held").await, 0, "no write got through");
    assert_eq!(
        dead_letters(&env).await,
        0,
        "a broken deployment is no reason to dead-letter the queue"
    );

    admin
        .execute(format!("GRANT INSERT ON ledger_entries TO {}", role.name).as_str())
        .await
        .expect("grant back");
    env.eventually("held jobs applied", Duration::from_secs(60), || async {
        applied(&env, "held").await == 5
    })
    .await;
    let attempts = env.job_attempts(&ids).await;
    assert_eq!(attempts, vec![1; 5], "held in place, never redelivered");
    assert_eq!(dead_letters(&env).await, 0);
    consumer.stop().await;
    admin.close().await.ok();
    env.cleanup().await;
}
