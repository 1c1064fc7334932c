//! Webhook intake over real HTTP with a real SQLite file: signatures, content types,
//! events, filters, idempotency, and that a refused delivery writes nothing.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

/// A server deploying `master` of Codertocat/Hello-World, as the real fixtures push.
async fn hello_world_app() -> TestApp {
    spawn_app_with(|s, _| {
        s.branch = Some("master".into());
        s.github_repository = Some("Codertocat/Hello-World".into());
    })
    .await
}

async fn post(
    app: &TestApp,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url("/webhooks/github"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).send().await.unwrap()
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(
        app.counts().await,
        (0, 0),
        "no deployment and no job may be written"
    );
}

#[test]
fn github_documented_test_vector_verifies() {
    use selfdeploy::secret::WebhookSecret;
    use selfdeploy::webhook::{sign, verify_signature};
    let secret = WebhookSecret::new("It's a Secret to Everybody");
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign(&secret, b"Hello, World!"), expected);
    assert!(verify_signature(&secret, Some(expected), b"Hello, World!").is_ok());
    assert!(verify_signature(&secret, Some(expected), b"Hello, World?").is_err());
}

#[tokio::test]
async fn real_push_fixture_is_queued_with_its_fields() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let res = app.webhook("push", &body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["status"], "queued");
    let id = answer["deployment_id"].as_i64().expect("deployment id");
    let d = app.deployment(id).await;
    assert_eq!(d.sha, SHA);
    assert_eq!(d.git_ref, "refs/heads/master");
    assert_eq!(d.repository, "Codertocat/Hello-World");
    assert_eq!(d.author, "Codertocat");
    assert_eq!(d.pusher, "Codertocat");
    assert!(!d.message.is_empty());
    let (deployments, jobs) = app.counts().await;
    assert_eq!((deployments, jobs), (1, 1), "one row and its job");
    let job_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM Jobs")
        .fetch_all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(job_ids, vec![d.job_id.clone()], "the row names its job");
}

#[tokio::test]
async fn the_original_path_pushevent_also_works() {
    let app = hello_world_app().await;
    let body = fixture("push-with-no-username-committer.payload.json");
    let res = app
        .client
        .post(app.url("/pushevent"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-2")
        .header("x-hub-signature-256", sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn ping_echoes_zen_and_queues_nothing() {
    let app = hello_world_app().await;
    let body = fixture("ping-payload.json");
    let zen = serde_json::from_str::<Value>(&body).unwrap()["zen"].clone();
    let res = app.webhook("ping", &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["zen"], zen);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn bad_signatures_are_refused_and_write_nothing() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let good = sign(body.as_bytes());
    let wrong = sign(b"another body");
    let sha1_only = format!("sha1={}", "0".repeat(40));
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing", vec![]),
        ("sha1 only", vec![("x-hub-signature", sha1_only.as_str())]),
        (
            "not sha256=",
            vec![("x-hub-signature-256", good.trim_start_matches("sha256="))],
        ),
        ("not hex", vec![("x-hub-signature-256", "sha256=zz")]),
        ("short", vec![("x-hub-signature-256", "sha256=abcd")]),
        ("wrong", vec![("x-hub-signature-256", wrong.as_str())]),
    ];
    for (what, extra) in cases {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "delivery-1"),
        ];
        headers.extend(extra);
        let res = post(&app, &headers, body.clone()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains(SECRET),
            "the secret never appears in an answer"
        );
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn signature_over_a_changed_body_is_refused() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let sig = sign(body.as_bytes());
    let tampered = body.replace("Codertocat", "Mallory");
    let res = post(
        &app,
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "x"),
            ("x-hub-signature-256", &sig),
        ],
        tampered,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn form_encoded_delivery_is_accepted() {
    let app = hello_world_app().await;
    let json = fixture("push-with-new-branch.payload.json");
    let body = serde_urlencoded::to_string([("payload", json.as_str())]).unwrap();
    let res = post(
        &app,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-github-event", "push"),
            ("x-github-delivery", "form-1"),
            ("x-hub-signature-256", &sign(body.as_bytes())),
        ],
        body,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(app.counts().await, (1, 1));
}

#[tokio::test]
async fn other_content_types_get_415() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let res = post(
        &app,
        &[
            ("content-type", "text/plain"),
            ("x-github-event", "push"),
            ("x-github-delivery", "ct-1"),
            ("x-hub-signature-256", &sign(body.as_bytes())),
        ],
        body,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn malformed_json_and_missing_fields_get_400() {
    let app = hello_world_app().await;
    let mut without_after: Value =
        serde_json::from_str(&fixture("push-with-new-branch.payload.json")).unwrap();
    without_after.as_object_mut().unwrap().remove("after");
    let mut bad_sha: Value =
        serde_json::from_str(&fixture("push-with-new-branch.payload.json")).unwrap();
    bad_sha["after"] = "not-a-sha; rm -rf /".into();
    for (what, body) in [
        ("malformed JSON", "{\"ref\": ".to_string()),
        ("no after", without_after.to_string()),
        ("bad sha", bad_sha.to_string()),
    ] {
        let res = app.webhook("push", &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        let answer: Value = res.json().await.unwrap();
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid payload"),
            "{what}: {answer}"
        );
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn missing_event_or_delivery_headers_get_400() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let sig = sign(body.as_bytes());
    let no_event = post(
        &app,
        &[
            ("content-type", "application/json"),
            ("x-github-delivery", "a"),
            ("x-hub-signature-256", &sig),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(no_event.status(), StatusCode::BAD_REQUEST);
    let no_delivery = post(
        &app,
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-hub-signature-256", &sig),
        ],
        body,
    )
    .await;
    assert_eq!(no_delivery.status(), StatusCode::BAD_REQUEST);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let app = hello_world_app().await;
    let body = vec![b' '; selfdeploy::webhook::MAX_BODY_BYTES + 1];
    let sig = sign(&body);
    let res = post(
        &app,
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "big"),
            ("x-hub-signature-256", &sig),
        ],
        body,
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn ignored_pushes_and_events_get_202_and_queue_nothing() {
    let app = hello_world_app().await;
    let base: Value = serde_json::from_str(&fixture("push-with-new-branch.payload.json")).unwrap();
    let mut tag_push = base.clone();
    tag_push["ref"] = "refs/tags/v1.0".into();
    let mut branch_deletion = base.clone();
    branch_deletion["deleted"] = true.into();
    branch_deletion["after"] = "0".repeat(40).into();
    branch_deletion["head_commit"] = Value::Null;
    let mut other_branch = base.clone();
    other_branch["ref"] = "refs/heads/feature".into();
    let mut other_repo = base.clone();
    other_repo["repository"]["full_name"] = "Mallory/Hello-World".into();
    let cases = [
        ("push", fixture("push-payload.json"), "tag deletion"),
        ("push", tag_push.to_string(), "not a branch"),
        ("push", branch_deletion.to_string(), "deleted"),
        ("push", other_branch.to_string(), "branch \"feature\""),
        ("push", other_repo.to_string(), "Mallory/Hello-World"),
        (
            "pull_request",
            fixture("pull_request-closed.payload.json"),
            "pull_request",
        ),
    ];
    for (event, body, why) in cases {
        let res = app.webhook(event, &body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{why}");
        let answer: Value = res.json().await.unwrap();
        let reason = answer["ignored"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: {answer}"));
        assert!(
            why == "tag deletion" || reason.contains(why),
            "{why}: reason {reason:?}"
        );
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn redelivery_never_makes_a_second_deployment() {
    let app = hello_world_app().await;
    let body = fixture("push-with-new-branch.payload.json");
    let first = app.webhook_with("push", &body, "same-guid").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let id = first.json::<Value>().await.unwrap()["deployment_id"]
        .as_i64()
        .unwrap();
    let again = app.webhook_with("push", &body, "same-guid").await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], json!(id));
    assert_eq!(app.counts().await, (1, 1));
}

#[tokio::test]
async fn api_lists_newest_first_with_pages_and_404s() {
    let app = hello_world_app().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let sha = format!("{:040x}", 0xabc0 + n);
        let res = app
            .webhook(
                "push",
                &push_payload("master", &sha, &format!("commit {n}")),
            )
            .await;
        ids.push(
            res.json::<Value>().await.unwrap()["deployment_id"]
                .as_i64()
                .unwrap(),
        );
    }
    let page1 = app.get_json("/api/deployments?per_page=2").await;
    assert_eq!(page1["total"], 3);
    let listed: Vec<i64> = page1["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2], ids[1]]);
    let page2 = app.get_json("/api/deployments?per_page=2&page=2").await;
    assert_eq!(page2["deployments"][0]["id"], json!(ids[0]));
    let one = app.get_json(&format!("/api/deployments/{}", ids[0])).await;
    assert_eq!(one["message"], "commit 0");
    assert!(one.get("stages").is_some());
    let missing = app
        .client
        .get(app.url("/api/deployments/999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = app
        .client
        .get(app.url("/api/deployments?page=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_secret_is_never_stored_in_the_database() {
    let app = hello_world_app().await;
    app.webhook("push", &fixture("push-with-new-branch.payload.json"))
        .await;
    app.idle().await;
    let path = app.state.config.data_dir.join(selfdeploy::db::DB_FILE_NAME);
    // Checkpoint so the WAL's contents are in the file too, then scan every byte.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&app.state.db)
        .await
        .unwrap();
    let bytes = std::fs::read(path).unwrap();
    assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
}

#[tokio::test]
async fn selfdeploy_push_sends_a_signed_push_for_a_local_commit() {
    let app = spawn_app().await;
    let (_repo, sha) = FixtureRepo::create(app.dir.path(), "by hand");
    let url = format!("http://{}", app.addr);
    let work = app.dir.path().join("work");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_selfdeploy-push"))
        .args([
            "--url",
            &url,
            "--repo",
            work.to_str().unwrap(),
            "--branch",
            "main",
        ])
        .env("SELFDEPLOY_WEBHOOK_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("202"), "{printed}");
    let listed = app.get_json("/api/deployments").await;
    assert_eq!(listed["deployments"][0]["sha"], sha);
    assert_eq!(listed["deployments"][0]["message"], "by hand");
}
