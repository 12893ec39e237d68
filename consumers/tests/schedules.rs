//! Recurring schedules end to end: each tick submits exactly one job whatever the number of
//! producer and consumer replicas, a tick due while no producer ran submits one job on return
//! (none with `catch_up: false`), and schedules belong to their tenant. Ticks are made due by
//! moving a schedule's `next_tick` back, as the passing of time would; the expressions are
//! chosen so that no tick of their own falls due while a test runs.
use std::time::Duration;

use codigo_testkit::http::{ALPHA, BETA, SCOPED};
use codigo_testkit::{
    ledger_payload, metric_value, scrape, ScratchDir, TestConsumer, TestEnv, TestProducer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

fn schedule(cron: &str, account: &str) -> Value {
    json!({"cron": cron,
           "job": {"type": "ledger.post", "payload": ledger_payload(account, 100)}})
}

/// Once a year: no tick of its own comes while a test runs.
const YEARLY: &str = "0 0 1 1 *";

/// Makes `name` due at `next_tick` (SQL, from `now()`); answers that time.
async fn make_due(env: &TestEnv, name: &str, next_tick: &str) -> OffsetDateTime {
    sqlx::query_scalar(&format!(
        "UPDATE schedules SET next_tick = {next_tick} WHERE name = $1 RETURNING next_tick"
    ))
    .bind(name)
    .fetch_one(&env.pool)
    .await
    .expect("the schedule is stored")
}

/// `(last_tick, last_job_id, next_tick)` of schedule `name`.
async fn ticks_of(
    env: &TestEnv,
    name: &str,
) -> (Option<OffsetDateTime>, Option<Uuid>, OffsetDateTime) {
    sqlx::query_as("SELECT last_tick, last_job_id, next_tick FROM schedules WHERE name = $1")
        .bind(name)
        .fetch_one(&env.pool)
        .await
        .expect("the schedule is stored")
}

/// Jobs submitted by schedule `name`'s ticks.
async fn jobs_of(env: &TestEnv, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE idempotency_key LIKE $1")
        .bind(format!("schedule:{name}@%"))
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tick_submits_one_job_with_two_producers_and_two_consumers() {
    let env = TestEnv::new().await;
    let gateways = [
        TestProducer::start(&env, &[]).await,
        TestProducer::start(&env, &[]).await,
    ];
    let consumers = [
        TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await,
        TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await,
    ];
    let stored = gateways[0]
        .put("/v1/schedules/yearly", ALPHA, schedule(YEARLY, "ticks"))
        .await;
    stored.assert_status(StatusCode::OK);
    assert_eq!(stored.body["name"], "yearly");
    assert_eq!(stored.body["timezone"], "UTC");
    assert_eq!(stored.body["catch_up"], true);
    let next_tick = OffsetDateTime::parse(
        stored.body["next_tick"].as_str().expect("next_tick"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(next_tick > OffsetDateTime::now_utc(), "{}", stored.text);
    assert_eq!(
        (
            next_tick.month(),
            next_tick.day(),
            next_tick.hour(),
            next_tick.minute()
        ),
        (time::Month::January, 1, 0, 0),
        "{}",
        stored.text
    );

    let tick = make_due(&env, "yearly", "now() - interval '1 second'").await;
    env.eventually("the tick's job to run", Duration::from_secs(30), || async {
        env.ledger_entries("ticks").await == 1
    })
    .await;
    let (last_tick, job_id, next) = ticks_of(&env, "yearly").await;
    assert!(last_tick.is_some_and(|t| t >= tick), "{last_tick:?}");
    assert!(next > tick, "moved on: {next}");
    let job_id = job_id.expect("the tick's job is recorded");
    let job = gateways[1]
        .get(&format!("/v1/jobs/{job_id}?wait=30s"), ALPHA)
        .await;
    assert_eq!(job.body["status"], "succeeded", "{}", job.text);
    // Both producers go on looking for due schedules; nothing more is submitted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.ledger_entries("ticks").await, 1);
    assert_eq!(jobs_of(&env, "yearly").await, 1);

    // A producer that published a tick and died before storing it leaves the tick due: the
    // same tick comes again, as the same job, and takes effect once.
    sqlx::query("UPDATE schedules SET next_tick = last_tick WHERE name = 'yearly'")
        .execute(&env.pool)
        .await
        .expect("rewind");
    env.eventually(
        "the tick to be handled again",
        Duration::from_secs(30),
        || async { ticks_of(&env, "yearly").await.2 > tick },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.ledger_entries("ticks").await,
        1,
        "the repeated tick took effect twice"
    );
    assert_eq!(jobs_of(&env, "yearly").await, 1);
    // Another tenant sees none of it.
    let theirs = gateways[1].get("/v1/schedules", BETA).await;
    assert_eq!(theirs.body, json!({"schedules": []}), "{}", theirs.text);
    gateways[1]
        .get("/v1/schedules/yearly", BETA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    gateways[1]
        .delete("/v1/schedules/yearly", BETA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    let ours = gateways[1].get("/v1/schedules", ALPHA).await;
    assert_eq!(ours.body["schedules"][0]["name"], "yearly", "{}", ours.text);
    assert_eq!(ours.body["schedules"][0]["last_job_id"], json!(job_id));

    // Deleted, it submits nothing more.
    gateways[0]
        .delete("/v1/schedules/yearly", ALPHA)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    gateways[0]
        .get("/v1/schedules/yearly", ALPHA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");

    for gateway in gateways {
        gateway.stop().await;
    }
    for consumer in consumers {
        consumer.stop().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn ticks_missed_while_no_producer_ran_submit_one_job_on_return_unless_catch_up_is_false() {
    let env = TestEnv::new().await;
    // Ticks at the five minutes from six to two minutes before this one: once they are made
    // the ones missed, the next of their own is an hour away.
    let minute = i32::from(OffsetDateTime::now_utc().minute());
    let minutes: Vec<String> = (2..=6)
        .rev()
        .map(|back| (minute - back).rem_euclid(60).to_string())
        .collect();
    let cron = format!("{} * * * *", minutes.join(","));
    let gateway = TestProducer::start(&env, &[]).await;
    gateway
        .put(
            "/v1/schedules/catching-up",
            ALPHA,
            schedule(&cron, "caught-up"),
        )
        .await
        .assert_status(StatusCode::OK);
    let mut not_catching_up = schedule(&cron, "not-caught-up");
    not_catching_up["catch_up"] = json!(false);
    gateway
        .put("/v1/schedules/not-catching-up", ALPHA, not_catching_up)
        .await
        .assert_status(StatusCode::OK);
    gateway.stop().await;

    // The five ticks pass with no producer running. (The only test here that skips a tick:
    // the in-process gateways of this binary share one metrics recorder.)
    let first_missed = "date_trunc('minute', now()) - interval '6 minutes'";
    make_due(&env, "catching-up", first_missed).await;
    make_due(&env, "not-catching-up", first_missed).await;
    let gateway = TestProducer::start(&env, &[]).await;
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    env.eventually(
        "the missed ticks to be handled",
        Duration::from_secs(30),
        || async {
            ticks_of(&env, "catching-up").await.2 > OffsetDateTime::now_utc()
                && ticks_of(&env, "not-catching-up").await.2 > OffsetDateTime::now_utc()
        },
    )
    .await;
    env.eventually(
        "the caught-up job to run",
        Duration::from_secs(30),
        || async { env.ledger_entries("caught-up").await == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs_of(&env, "catching-up").await,
        1,
        "one job for five missed ticks"
    );
    let (last_tick, _, next_tick) = ticks_of(&env, "catching-up").await;
    let last_tick = last_tick.expect("a tick ran");
    assert_eq!(
        i32::from(last_tick.minute()),
        (minute - 2).rem_euclid(60),
        "the latest of the missed ticks ran: {last_tick}"
    );
    assert!(
        next_tick - last_tick > time::Duration::minutes(50),
        "the next is the next hour's first: {next_tick}"
    );
    assert_eq!(jobs_of(&env, "not-catching-up").await, 0);
    assert_eq!(env.ledger_entries("not-caught-up").await, 0);
    assert_eq!(ticks_of(&env, "not-catching-up").await.0, None);
    let metrics = scrape(&gateway.url("/metrics")).await;
    assert_eq!(
        metric_value(
            &metrics,
            "codigo_gateway_schedule_ticks_total",
            &[("result", "skipped")]
        ),
        Some(1.0),
        "{metrics}"
    );

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn schedules_that_could_not_run_are_refused_with_the_reason_and_nothing_stored() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let job = json!({"type": "ledger.post", "payload": ledger_payload("refused", 100)});
    let cases = [
        (json!({"cron": "0 0 * * * *", "job": job}), "5 fields"),
        (json!({"cron": "61 * * * *", "job": job}), "cannot be read"),
        (
            json!({"cron": "0 0 * * *", "timezone": "Mars/Olympus", "job": job}),
            "IANA",
        ),
        (
            json!({"cron": "0 0 * * *", "job": job, "every": "day"}),
            "unknown field",
        ),
        (json!({"cron": "0 0 * * *"}), "job"),
        (
            json!({"cron": "0 0 * * *",
                   "job": {"type": "ledger.post", "payload": {"account": "x"}}}),
            "/job/payload",
        ),
    ];
    for (body, reason) in cases {
        let reply = gateway
            .put("/v1/schedules/refused", ALPHA, body.clone())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert!(reply.text.contains(reason), "{body}: {}", reply.text);
    }
    gateway
        .put(
            "/v1/schedules/a%20b",
            ALPHA,
            json!({"cron": "0 0 * * *", "job": job}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    gateway
        .put(
            "/v1/schedules/refused",
            ALPHA,
            json!({"cron": "0 0 * * *", "job": {"type": "no.such.type", "payload": {}}}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");
    // A key may schedule only the jobs it may submit.
    let scoped = gateway
        .put(
            "/v1/schedules/refused",
            SCOPED,
            json!({"cron": "0 0 * * *", "job": job}),
        )
        .await;
    assert_eq!(scoped.status, StatusCode::FORBIDDEN, "{}", scoped.text);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);

    gateway.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn codigo_ctl_applies_lists_and_deletes_a_tenants_schedules_through_the_gateway() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let dir = ScratchDir::new("schedules");
    let file = dir.write(
        "schedules.yaml",
        "name: nightly\ncron: '30 2 * * *'\ntimezone: Europe/Madrid\n\
         job: {type: ledger.post, payload: {account: nightly, amount_cents: 1, currency: EUR}}\n\
         ---\nname: weekly\ncron: '0 9 * * MON'\ncatch_up: false\n\
         job: {type: ledger.post, payload: {account: weekly, amount_cents: 1, currency: EUR}}\n",
    );
    let url = gateway.url("/");
    let keyless = env
        .ctl(&["schedules", "list", "--gateway-url", url.as_str()])
        .await;
    assert!(!keyless.status.success());
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("--api-key"),
        "{stderr}"
    );
    let gateway_args = ["--gateway-url", url.as_str(), "--api-key", ALPHA];
    let file = file.to_str().expect("utf-8 path");
    let applied = env
        .ctl_ok(&[&["schedules", "apply", "-f", file][..], &gateway_args].concat())
        .await;
    assert!(applied.contains("nightly: applied; next tick"), "{applied}");
    assert!(applied.contains("weekly: applied"), "{applied}");

    let listed: Value = serde_json::from_str(
        &env.ctl_ok(
            &[
                &["schedules", "list", "--format", "json"][..],
                &gateway_args,
            ]
            .concat(),
        )
        .await,
    )
    .expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["nightly", "weekly"]);
    // 02:30 in Madrid is 01:30 UTC in winter, 00:30 UTC in summer.
    let nightly = gateway.get("/v1/schedules/nightly", ALPHA).await;
    let next = nightly.body["next_tick"].as_str().expect("next_tick");
    assert!(
        next.ends_with("T01:30:00Z") || next.ends_with("T00:30:00Z"),
        "{next}"
    );
    assert_eq!(nightly.body["timezone"], "Europe/Madrid");
    // Not the other tenant's.
    assert_eq!(
        gateway.get("/v1/schedules", BETA).await.body["schedules"],
        json!([])
    );

    let deleted = env
        .ctl_ok(&[&["schedules", "delete", "weekly"][..], &gateway_args].concat())
        .await;
    assert!(deleted.contains("weekly: deleted"), "{deleted}");
    let again = env
        .ctl_ok(&[&["schedules", "delete", "weekly"][..], &gateway_args].concat())
        .await;
    assert!(again.contains("no such schedule"), "{again}");
    // A refusal names the schedule and what was applied before it.
    let bad = dir.write(
        "bad.json",
        r#"[{"name": "good", "cron": "0 * * * *", "job": {"type": "ledger.post", "payload": {"account": "a", "amount_cents": 1, "currency": "EUR"}}},
            {"name": "bad", "cron": "0 * * *", "job": {"type": "ledger.post", "payload": {}}}]"#,
    );
    let refused = env
        .ctl(
            &[
                &["schedules", "apply", "-f", bad.to_str().expect("utf-8")][..],
                &gateway_args,
            ]
            .concat(),
        )
        .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("\"bad\"") && stderr.contains("5 fields") && stderr.contains("1 of 2"),
        "{stderr}"
    );

    gateway.stop().await;
    env.cleanup().await;
}
