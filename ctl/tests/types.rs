//! `codigo-ctl types` and `setup` against real NATS: a declared type's durable consumer exists
//! as soon as it is applied, with the type's attempts as MaxDeliver, and `setup` removes the
//! durable of a deleted type once its queue is drained, never before.
use codigo_testkit::{ScratchDir, TestEnv};

const DECLARATION: &str = "
type: reports.render
version: 1
schema: {type: object}
target: {http: {url: 'http://reports.render.svc:8080/', timeout: 30s}}
retry: {attempts: 7, first_delay: 1s, max_delay: 1m}
";

#[tokio::test]
async fn a_declared_types_durable_lives_from_apply_until_setup_finds_it_drained() {
    let env = TestEnv::new().await;
    let files = ScratchDir::new("types");
    let file = files.write("reports.yaml", DECLARATION);
    let durable = env.names.durable("reports.render");
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("work stream");

    env.ctl_ok(&["types", "apply", "-f", file.to_str().unwrap()])
        .await;
    let info = stream
        .consumer_info(&durable)
        .await
        .expect("durable created by apply");
    assert_eq!(info.config.max_deliver, 7);
    assert_eq!(
        info.config.filter_subject,
        env.names.job_subject("reports.render")
    );

    // Deleted with a job still queued: setup keeps the durable, the job is someone's.
    env.publish_job("reports.render", "{}", "queued-job").await;
    env.ctl_ok(&["types", "delete", "reports.render"]).await;
    let setup = env.ctl_ok(&["setup"]).await;
    assert!(!setup.contains(&durable), "{setup}");
    assert!(
        stream.consumer_info(&durable).await.is_ok(),
        "kept while a job waits"
    );

    // Drained: the next setup removes it, and leaves the built-in types' durables alone.
    stream.purge().await.expect("purge");
    let setup = env.ctl_ok(&["setup"]).await;
    assert!(setup.contains(&format!("removed {durable}")), "{setup}");
    assert!(
        stream.consumer_info(&durable).await.is_err(),
        "removed once drained"
    );
    for builtin in ["ledger.post", "webhook.deliver"] {
        assert!(stream
            .consumer_info(env.names.durable(builtin))
            .await
            .is_ok());
    }

    env.cleanup().await;
}
