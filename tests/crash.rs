//! The server killed with SIGKILL mid-build and started again: the interrupted deployment
//! is marked failed, its push runs again as a new deployment, nothing runs twice.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn a_server_killed_mid_build_settles_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_repo, sha) = FixtureRepo::create(root, "survivor");
    let build = format!(
        "echo started >> {builds}; while [ ! -e {gate} ]; do sleep 0.05; done; echo built >> {builds}; cargo build --release --locked",
        builds = root.join("builds.log").display(),
        gate = root.join("gate").display()
    );
    let mut envs = server_envs(root, &build);
    envs.push((
        "SELFDEPLOY_ARTIFACT",
        format!("target/release/{FIXTURE_BIN}"),
    ));
    envs.push(("SELFDEPLOY_RESTART", "none".to_string()));
    let mut server = ServerProcess::start(&envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let res = push_to(&client, &server.url(""), &sha, "survivor").await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let builds = root.join("builds.log");
    eventually(Duration::from_secs(60), "the build to start", || async {
        std::fs::read_to_string(&builds)
            .ok()
            .filter(|s| s.contains("started"))
            .map(|_| ())
    })
    .await;

    server.kill9();
    let mut server = ServerProcess::start(&envs);
    server.wait_healthy().await;
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // Settled at start-up, before the gate opens: nothing is left running.
    let first = get(server.url("/api/deployments/1")).await;
    assert_eq!(first["status"], "failed");
    assert!(first["reason"].as_str().unwrap().contains("interrupted"));
    std::fs::write(root.join("gate"), "open").unwrap();
    eventually(
        Duration::from_secs(120),
        "the push to be deployed again",
        || {
            let url = server.url("/api/deployments/2");
            async move {
                let d = get(url).await;
                (d["status"] == "success").then_some(())
            }
        },
    )
    .await;
    let again = get(server.url("/api/deployments/2")).await;
    assert_eq!(again["sha"], sha);
    let list = get(server.url("/api/deployments")).await;
    assert_eq!(list["total"], 2, "exactly one new deployment: {list}");
    // The interrupted build's processes were stopped at start-up; the new one ran once.
    let log = std::fs::read_to_string(&builds).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["started", "started", "built"],
        "{log}"
    );
    let first = get(server.url("/api/deployments/1")).await;
    assert_eq!(
        first["status"], "failed",
        "apalis's re-enqueue did not run it again"
    );
    server.kill9();
}
