//! `codigo-ctl dlq` against real NATS and Postgres: dead letters made by a real worker are
//! listed, filtered, shown, replayed (twice: applied once) and purged.
use std::process::Output;
use std::time::Duration;

use async_trait::async_trait;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_schemas::LedgerPost;
use codigo_testkit::{envelope, flags, TestConsumer, TestEnv};
use serde_json::{json, Value};
use uuid::Uuid;

/// A worker that refuses every ledger job, so that valid jobs end up dead-lettered.
struct Refuse;

#[async_trait]
impl Worker<LedgerPost> for Refuse {
    async fn work(&self, _job: &JobCtx<'_, LedgerPost>, _tx: &mut JobTx) -> Result<Done, JobError> {
        Err(JobError::permanent("refused for the test"))
    }
}

async fn start_consumer(env: &TestEnv, worker: Option<Refuse>) -> TestConsumer {
    let settings = "--job-types ledger.post --max-deliver 4 --ack-wait-secs 5 --backoff-secs 1";
    TestConsumer::spawn_with(env, &flags(settings), |app| match worker {
        Some(worker) => app.with_worker::<LedgerPost>(worker),
        None => app,
    })
    .await
}

async fn publish(env: &TestEnv, body: Vec<u8>, msg_id: &str) {
    env.publish_job("ledger.post", body, msg_id).await;
}

fn ledger_job(account: &str, amount: i64) -> (Uuid, Vec<u8>) {
    let id = Uuid::now_v7();
    let payload = json!({"account": account, "amount_cents": amount, "currency": "EUR"});
    let envelope = envelope(id, "ledger.post", "ops", payload);
    (id, serde_json::to_vec(&envelope).expect("json"))
}

async fn ctl(env: &TestEnv, args: &[&str]) -> Output {
    env.ctl(args).await
}

async fn ctl_json(env: &TestEnv, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let output = ctl(env, &args).await;
    assert!(
        output.status.success(),
        "codigo-ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dead_letter_count(env: &TestEnv) -> u64 {
    env.dead_letter_count().await
}

async fn balance(env: &TestEnv, account: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries WHERE account = $1),
                COALESCE((SELECT balance_cents FROM account_balances WHERE account = $1), 0)",
    )
    .bind(account)
    .fetch_one(&env.pool)
    .await
    .expect("query")
}

fn seqs(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn dead_letters_are_listed_filtered_shown_replayed_once_and_purged() {
    let env = TestEnv::new().await;
    // A worker that refuses everything turns valid jobs into dead letters.
    let refusing = start_consumer(&env, Some(Refuse)).await;
    let (first_id, first) = ledger_job("replay-a", 1250);
    let (_, second) = ledger_job("replay-b", -300);
    publish(&env, first, "dlq-1").await;
    publish(&env, second, "dlq-2").await;
    publish(&env, b"{not json".to_vec(), "dlq-3").await;
    wait_until("three dead letters", || async {
        dead_letter_count(&env).await == 3
    })
    .await;
    refusing.stop().await;

    // list, with every filter
    let all = ctl_json(&env, &["dlq", "list"]).await;
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
    let permanent = ctl_json(&env, &["dlq", "list", "--reason", "permanent"]).await;
    assert_eq!(seqs(&permanent).len(), 2, "{permanent}");
    let first_seq = permanent
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["job_id"] == first_id.to_string())
        .and_then(|l| l["seq"].as_u64())
        .expect("the first job's dead letter");
    assert_eq!(permanent[0]["job_type"], "ledger.post");
    assert_eq!(permanent[0]["attempts"], 1);
    assert_eq!(permanent[0]["error"], "refused for the test");
    assert_eq!(
        permanent[0]["original_subject"],
        env.names.job_subject("ledger.post")
    );
    let decode = ctl_json(&env, &["dlq", "list", "--reason", "decode"]).await;
    assert_eq!(seqs(&decode).len(), 1, "{decode}");
    for (args, expected) in [
        (vec!["--job-type", "webhook.deliver"], 0),
        (vec!["--job-type", "ledger.post"], 3),
        (vec!["--since", "1h"], 3),
        (vec!["--until", "1h"], 0),
        (
            vec![
                "--since",
                "2000-01-01T00:00:00Z",
                "--until",
                "2999-01-01T00:00:00Z",
            ],
            3,
        ),
        (vec!["--since", "2999-01-01T00:00:00Z"], 0),
    ] {
        let mut full = vec!["dlq", "list"];
        full.extend(args.iter().copied());
        let found = ctl_json(&env, &full).await;
        assert_eq!(seqs(&found).len(), expected, "{args:?}: {found}");
    }
    let text = ctl(&env, &["dlq", "list", "--reason", "permanent"]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("REASON") && text.contains(&first_id.to_string()),
        "{text}"
    );
    let bad = ctl(&env, &["dlq", "list", "--since", "yesterday"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    // show
    let shown = ctl_json(&env, &["dlq", "show", &first_seq.to_string()]).await;
    assert_eq!(
        shown["headers"]["Codigo-Dlq-Reason"], "permanent",
        "{shown}"
    );
    assert_eq!(shown["body"]["id"], first_id.to_string(), "{shown}");
    let text = ctl(&env, &["dlq", "show", &first_seq.to_string()]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("Codigo-Dlq-Reason: permanent") && text.contains("\"replay-a\""),
        "{text}"
    );
    let missing = ctl(&env, &["dlq", "show", "999999"]).await;
    assert!(!missing.status.success());

    // replay needs a target
    let unguarded = ctl(&env, &["dlq", "replay"]).await;
    assert!(!unguarded.status.success());
    assert!(String::from_utf8_lossy(&unguarded.stderr).contains("--all"));

    // Replay to a working consumer: applied once.
    let working = start_consumer(&env, None).await;
    let replayed = ctl_json(
        &env,
        &[
            "dlq",
            "replay",
            &first_seq.to_string(),
            "--keep",
            "--rate",
            "50/s",
        ],
    )
    .await;
    assert_eq!(replayed["replayed"][0]["duplicate"], false, "{replayed}");
    assert_eq!(replayed["replayed"][0]["deleted"], false, "{replayed}");
    wait_until("the replayed job applied", || async {
        balance(&env, "replay-a").await == (1, 1250)
    })
    .await;

    // The same dead letter again, at once: JetStream drops the repeat.
    let again = ctl_json(&env, &["dlq", "replay", &first_seq.to_string(), "--keep"]).await;
    assert_eq!(again["replayed"][0]["duplicate"], true, "{again}");

    // Again after the duplicate window: the message is stored and delivered, and Postgres
    // finds the job id applied already.
    let mut stream_args = env.jetstream_args();
    stream_args.duplicate_window = Duration::from_secs(1);
    env.js
        .update_stream(codigo_common::jetstream::jobs_stream_config(
            &env.names,
            &stream_args,
        ))
        .await
        .expect("shorter duplicate window");
    // The server forgets message ids on a pruning timer, not at the instant the window
    // ends, so a loaded machine may still report the repeat for a while: replay (keeping the
    // letter) until one is stored.
    wait_until("the replay stored after the duplicate window", || async {
        let late = ctl_json(&env, &["dlq", "replay", &first_seq.to_string(), "--keep"]).await;
        late["replayed"][0]["duplicate"] == false
    })
    .await;
    let deleted = ctl_json(&env, &["dlq", "replay", &first_seq.to_string()]).await;
    assert_eq!(deleted["replayed"][0]["deleted"], true, "{deleted}");
    wait_until("the work stream drained", || async {
        let mut stream = env
            .js
            .get_stream(env.names.jobs_stream())
            .await
            .expect("stream");
        stream.info().await.expect("info").state.messages == 0
    })
    .await;
    assert_eq!(
        balance(&env, "replay-a").await,
        (1, 1250),
        "a second replay applies nothing"
    );
    let status: (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs WHERE id = $1")
        .bind(first_id)
        .fetch_one(&env.pool)
        .await
        .expect("job row");
    assert_eq!(status.0, "succeeded");
    working.stop().await;
    assert_eq!(
        dead_letter_count(&env).await,
        2,
        "the replayed letter is gone"
    );

    // purge: guarded, filtered
    let guarded = ctl(&env, &["dlq", "purge", "--reason", "decode"]).await;
    assert!(!guarded.status.success());
    assert!(String::from_utf8_lossy(&guarded.stderr).contains("--yes"));
    assert_eq!(
        dead_letter_count(&env).await,
        2,
        "nothing purged without --yes"
    );
    let purged = ctl_json(&env, &["dlq", "purge", "--reason", "decode", "--yes"]).await;
    assert_eq!(purged["purged"], 1, "{purged}");
    let left = ctl_json(&env, &["dlq", "list"]).await;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["reason"], "permanent");
    env.cleanup().await;
}
