//! A job that kills its process every time it runs (a decoder crash, an OOM kill) must not
//! take the API down forever: attempts are counted when a job is claimed, so after
//! `queue.max_attempts` claims the job ends dead and its image failed with the reason, and the
//! process that claims it next stays up.

use std::time::Duration;

use crate::helpers::{jpeg, App, Backend, Options, ADMIN};

#[tokio::test]
async fn a_job_that_kills_its_process_ends_dead_and_the_api_stays_up() {
    let opts = Options::new(Backend::Sqlite)
        .env("FLEXPHOTO__QUEUE__MAX_ATTEMPTS", "2")
        .env("FLEXPHOTO__QUEUE__LEASE_SECS", "2");
    let mut app = App::prepare(opts).await;
    // Accepted by an API-only process, so that no worker dies before the upload's answer.
    app.env
        .insert("FLEXPHOTO__QUEUE__WORKERS".into(), "0".into());
    app.start();
    let (s, v) = app.upload(ADMIN, "poison", "p.jpg", &jpeg(64, 48, 9)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    app.stop();
    app.env.remove("FLEXPHOTO__QUEUE__WORKERS");
    app.env
        .insert("FLEXPHOTO_FAILPOINTS".into(), "process.start".into());
    // Each claim (attempts 1 and 2) kills the process; a restart claims it again once the
    // dead worker's lease has expired.
    for attempt in 1..=2 {
        // It may die before it is seen listening: either way it ran the job.
        let _ = app.try_start();
        assert!(
            app.wait_exit(Duration::from_secs(60)),
            "attempt {attempt} did not reach the failpoint"
        );
    }
    // The third claim is over the limit: the job ends dead without running, and this
    // process stays up and answers.
    app.start();
    assert!(
        !app.wait_exit(Duration::from_secs(5)),
        "the process died again on the same job"
    );
    let doc = app.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or("")
            .contains("gave up after 2 attempts"),
        "{doc}"
    );
    let (s, _) = app.get_json("/v1/images?owner=poison", ADMIN).await;
    assert_eq!(s, 200);
    // Other uploads are processed by the same process.
    app.env.remove("FLEXPHOTO_FAILPOINTS");
    app.stop();
    app.start();
    let ok = app
        .upload_ready(ADMIN, "poison", "q.jpg", &jpeg(64, 48, 10))
        .await;
    let (_, doc) = app.get_json(&format!("/v1/images/{ok}"), ADMIN).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    app.cleanup().await;
}
