//! `deploy/postgres/roles.sql` on the test server: uniquely named roles, `codigo-ctl setup`
//! (the real binary) as the migration role, the producer and the consumer as the
//! application role running the pipeline's statements, and the application role refused
//! every CREATE, ALTER and DROP, and any UPDATE or DELETE of the append-only ledger entries. The roles are dropped at the end, even after a failure.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use codigo_testkit::{
    flags, postgres_server_url, respond_with, TestConsumer, TestEnv, TestProducer,
};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const TOKEN: &str = "postgres-roles-token-0001";

/// `postgres_server_url()` with another user and password, for `database`.
fn url_as(user: &str, password: &str, database: &str, query: &str) -> String {
    let server = postgres_server_url();
    let (scheme, rest) = server.split_once("://").expect("URL with a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}/{database}{query}")
}

fn psql(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new("psql")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("psql runs (apt-get install postgresql-client)")
}

/// Drops the test database and the roles when the test ends, however it ends. Roles are
/// cluster-wide: nothing may be left behind.
struct Roles {
    app: String,
    migration: String,
    database: String,
}

impl Drop for Roles {
    fn drop(&mut self) {
        let admin = format!("{}/postgres", postgres_server_url());
        let output = psql(
            &[
                &admin,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
                "-c",
                &format!(
                    "DROP ROLE IF EXISTS \"{}\", \"{}\"",
                    self.app, self.migration
                ),
            ],
            &[],
        );
        if !output.status.success() {
            eprintln!(
                "could not drop roles {} and {}: {}",
                self.app,
                self.migration,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

fn apply_roles(env: &TestEnv, roles: &Roles) {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/postgres/roles.sql");
    let database = format!("{}/{}", postgres_server_url(), env.database);
    let app_role = format!("app_role={}", roles.app);
    let migration_role = format!("migration_role={}", roles.migration);
    let output = psql(
        &[
            &database,
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            &app_role,
            "-v",
            &migration_role,
            "-f",
            file,
        ],
        &[
            ("CODIGO_APP_DB_PASSWORD", "app-password-for-tests"),
            (
                "CODIGO_MIGRATION_DB_PASSWORD",
                "migration-password-for-tests",
            ),
        ],
    );
    assert!(
        output.status.success(),
        "roles.sql failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ctl_setup(env: &TestEnv, database_url: &str) -> std::process::Output {
    codigo_testkit::command("codigo-ctl")
        .arg("setup")
        .env_clear()
        .env("NATS_URL", codigo_testkit::nats_url())
        .env("CODIGO_NAMESPACE", env.names.namespace())
        .env("DATABASE_URL", database_url)
        .output()
        .expect("codigo-ctl runs")
}

/// A webhook target: 200 on `/ok`, 400 on anything else.
async fn webhook_target() -> SocketAddr {
    respond_with(|request| {
        if request.starts_with("POST /ok ") {
            "200 OK".into()
        } else {
            "400 Bad Request".into()
        }
    })
    .await
}

async fn start_services(env: &TestEnv, app_url: &str) -> (TestProducer, TestConsumer) {
    let common = format!(
        "--http-addr 127.0.0.1:0 --nats-url {} --namespace {} --database-url {app_url} \
         --ensure-topology false",
        codigo_testkit::nats_url(),
        env.names.namespace()
    );
    let producer = format!("{common} --api-keys roles:{TOKEN}");
    let producer = TestProducer::from_flags(&flags(&producer)).await;
    let consumer = format!(
        "{common} --webhook-signing-key postgres-roles-signing-key --webhook-allow-private \
         --fetch-expires-ms 1000 --shutdown-timeout-secs 5"
    );
    let consumer = TestConsumer::from_flags(&flags(&consumer)).await;
    (producer, consumer)
}

async fn submit(http: &reqwest::Client, producer: &TestProducer, job: Value) -> String {
    let response = http
        .post(format!("http://{}/v1/jobs", producer.addr))
        .bearer_auth(TOKEN)
        .json(&job)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// Waits for a job's final status, read through the producer (the application role).
async fn final_status(http: &reqwest::Client, producer: &TestProducer, id: &str) -> Value {
    for _ in 0..600 {
        if let Ok(response) = http
            .get(format!("http://{}/v1/jobs/{id}", producer.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            let body: Value = response.json().await.unwrap_or_default();
            if matches!(
                body["status"].as_str(),
                Some("succeeded" | "failed" | "dead_lettered")
            ) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never finished");
}

/// The statement fails for want of privilege (SQLSTATE 42501), not for any other reason.
async fn refused(connection: &mut PgConnection, statement: &str) {
    let error = sqlx::query(statement)
        .execute(&mut *connection)
        .await
        .expect_err(statement);
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
}

#[tokio::test]
async fn application_role_runs_the_pipeline_but_changes_no_schema() {
    let env = TestEnv::bare().await;
    let suffix = &Uuid::new_v4().simple().to_string()[..12];
    let roles = Roles {
        app: format!("codigo_app_{suffix}"),
        migration: format!("codigo_migrate_{suffix}"),
        database: env.database.clone(),
    };
    apply_roles(&env, &roles);
    // A membership granted elsewhere (a managed service's admin group, say) does not survive
    // the next run: the application role holds only what roles.sql grants.
    sqlx::query(&format!("GRANT pg_write_all_data TO \"{}\"", roles.app))
        .execute(&env.pool)
        .await
        .expect("grant a membership");
    apply_roles(&env, &roles);
    let memberships: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
          WHERE r.rolname IN ($1, $2)",
    )
    .bind(&roles.app)
    .bind(&roles.migration)
    .fetch_one(&env.pool)
    .await
    .expect("memberships");
    assert_eq!(memberships, 0);

    // The application role cannot migrate; the migration role can.
    let app_url = url_as(
        &roles.app,
        "app-password-for-tests",
        &env.database,
        "?sslmode=prefer",
    );
    let migration_url = url_as(
        &roles.migration,
        "migration-password-for-tests",
        &env.database,
        "",
    );
    let denied = ctl_setup(&env, &app_url);
    assert!(
        !denied.status.success(),
        "setup ran as the application role"
    );
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("needs DDL rights"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let setup = ctl_setup(&env, &migration_url);
    assert!(
        setup.status.success(),
        "setup as the migration role failed:\n{}{}",
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );
    apply_roles(&env, &roles);

    // The pipeline as the application role: ledger (entries, balances, jobs), webhook
    // (deliveries), a dead letter (jobs upsert), and status reads.
    let target = webhook_target().await;
    let (producer, consumer) = start_services(&env, &app_url).await;
    let http = reqwest::Client::new();
    for addr in [producer.addr, consumer.addr] {
        let mut ready = false;
        for _ in 0..600 {
            let url = format!("http://{addr}/readyz");
            if http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "{addr} never became ready as the application role");
    }
    let ledger = submit(
        &http,
        &producer,
        json!({"type": "ledger.post",
        "payload": {"account": "acct-roles", "amount_cents": 990, "currency": "EUR"}}),
    )
    .await;
    let delivered = submit(
        &http,
        &producer,
        json!({"type": "webhook.deliver",
        "payload": {"url": format!("http://{target}/ok"), "body": {"hello": "roles"}}}),
    )
    .await;
    let refused_hook = submit(
        &http,
        &producer,
        json!({"type": "webhook.deliver",
        "payload": {"url": format!("http://{target}/gone"), "body": {}}}),
    )
    .await;
    assert_eq!(
        final_status(&http, &producer, &ledger).await["status"],
        "succeeded"
    );
    assert_eq!(
        final_status(&http, &producer, &delivered).await["status"],
        "succeeded"
    );
    assert_eq!(
        final_status(&http, &producer, &refused_hook).await["status"],
        "dead_lettered"
    );
    consumer.stop().await;
    producer.stop().await;
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(deliveries, 1);

    // The application role, over TLS when the server offers it, may touch rows only.
    let mut app = PgConnection::connect(&app_url)
        .await
        .expect("application role connects");
    let server_has_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut app)
        .await
        .expect("ssl");
    let tls_url = url_as(
        &roles.app,
        "app-password-for-tests",
        &env.database,
        "?sslmode=require",
    );
    match PgConnection::connect(&tls_url).await {
        Ok(mut tls) => {
            let encrypted: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&mut tls)
                    .await
                    .expect("pg_stat_ssl");
            assert!(encrypted, "sslmode=require gave a plaintext connection");
        }
        // sslmode=require never falls back to plaintext.
        Err(error) => assert_eq!(server_has_tls, "off", "TLS offered but refused: {error}"),
    }
    for statement in [
        "CREATE TABLE intruder (id int)",
        "CREATE INDEX intruder_idx ON jobs (tenant)",
        "ALTER TABLE jobs ADD COLUMN intruder int",
        "ALTER TABLE ledger_entries DROP COLUMN memo",
        "DROP TABLE account_balances",
        "TRUNCATE jobs",
        "CREATE SCHEMA intruder",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'forged', true, '\\x00', 0)",
        "DELETE FROM _sqlx_migrations",
        // Ledger entries are append-only for the services.
        "UPDATE ledger_entries SET amount_cents = amount_cents + 1",
        "DELETE FROM ledger_entries",
    ] {
        refused(&mut app, statement).await;
    }
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(&mut app)
        .await
        .expect("the application role reads ledger entries");
    assert_eq!(entries, 1);
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut app)
        .await
        .expect("the application role reads the migration history");
    assert!(versions >= 1);

    // A table a later migration adds is usable by the application role at once.
    let mut migration = PgConnection::connect(&migration_url)
        .await
        .expect("migration role connects");
    sqlx::query("CREATE TABLE later_feature (id int PRIMARY KEY, note text)")
        .execute(&mut migration)
        .await
        .expect("the migration role creates tables");
    for statement in [
        "INSERT INTO later_feature VALUES (1, 'a')",
        "UPDATE later_feature SET note = 'b' WHERE id = 1",
        "SELECT * FROM later_feature",
        "DELETE FROM later_feature WHERE id = 1",
    ] {
        sqlx::query(statement)
            .execute(&mut app)
            .await
            .expect(statement);
    }
    refused(&mut app, "DROP TABLE later_feature").await;
    app.close().await.expect("close");
    migration.close().await.expect("close");

    env.cleanup().await;
    drop(roles);
}
