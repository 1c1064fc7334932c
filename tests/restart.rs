//! The `exec` self-restart with the real server binary: a release is health-checked, then
//! the running process hands its socket over and becomes it, keeping its PID and refusing
//! no request; a release that cannot start never stays live.
//!
//! The releases here are built by a `build.sh` in each pushed commit. Instead of compiling
//! the whole server again (minutes), it installs a small launcher that runs the server
//! binary this test suite built, or misbehaves on purpose. Everything after the build (the
//! check, the hand-over, exec, reconciliation) is the real thing; `tests/e2e.rs` builds the
//! real project.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_selfdeploy");

/// A build.sh whose release runs the real server binary.
fn good_build() -> String {
    release_launcher(&format!("exec {BIN} \"$@\""))
}

/// A build.sh whose release exits at once, even in check mode.
fn dead_build() -> String {
    release_launcher("echo 'this release cannot start' >&2; exit 3")
}

/// A build.sh whose release passes the check but dies when it really starts.
fn dies_on_start_build() -> String {
    release_launcher(&format!(
        "for a in \"$@\"; do [ \"$a\" = --check ] && exec {BIN} \"$@\"; done\necho 'dying on start' >&2; exit 4"
    ))
}

struct Setup {
    dir: tempfile::TempDir,
    repo: FixtureRepo,
    envs: Vec<(&'static str, String)>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (repo, _) = FixtureRepo::create(root, "unused");
    let mut envs = server_envs(root, "sh build.sh");
    envs.push(("SELFDEPLOY_HEALTH_TIMEOUT", "20".to_string()));
    Setup { dir, repo, envs }
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn wait_status(
    client: &reqwest::Client,
    server: &ServerProcess,
    id: i64,
    want: &str,
) -> Value {
    let url = server.url(&format!("/api/deployments/{id}"));
    eventually(
        Duration::from_secs(120),
        &format!("deployment {id} to be {want}"),
        || {
            let req = client.get(url.clone()).send();
            async move {
                let d: Value = req.await.ok()?.json().await.ok()?;
                let status = d["status"].as_str()?;
                if status == want {
                    Some(d)
                } else if ["failed", "stale", "superseded"].contains(&status) && want != status {
                    panic!("deployment {id} ended {status}: {}", d["reason"]);
                } else {
                    None
                }
            }
        },
    )
    .await
}

async fn push(client: &reqwest::Client, server: &ServerProcess, sha: &str) -> i64 {
    let res = push_to(client, &server.url(""), sha, "release").await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["deployment_id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_self_deploy_keeps_the_pid_and_refuses_no_request() {
    let s = setup();
    let mut server = ServerProcess::start(&s.envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let pid = server.child.id() as u64;
    let load = Load::start(server.url("/version"));

    let v1 = s.repo.commit_files(&[("build.sh", &good_build())], "v1");
    let id1 = push(&client, &server, &v1).await;
    wait_status(&client, &server, id1, "deployed").await;
    let version = get_json(&client, server.url("/version")).await;
    assert_eq!(version["commit"], v1);
    assert_eq!(version["pid"], pid, "exec keeps the PID");
    assert!(
        version["release"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id1}-"))
    );

    let v2 = s
        .repo
        .commit_files(&[("build.sh", &format!("{}# v2\n", good_build()))], "v2");
    let id2 = push(&client, &server, &v2).await;
    wait_status(&client, &server, id2, "deployed").await;
    let version = get_json(&client, server.url("/version")).await;
    assert_eq!(version["commit"], v2);
    assert_eq!(version["pid"], pid);
    let first = get_json(&client, server.url(&format!("/api/deployments/{id1}"))).await;
    assert_eq!(first["status"], "success");
    let stages =
        get_json(&client, server.url(&format!("/api/deployments/{id2}"))).await["stages"].clone();
    assert_eq!(stages[3]["name"], "restart");
    assert_eq!(stages[3]["outcome"], "ok");
    let current = std::fs::read_link(s.dir.path().join("data/current")).unwrap();
    assert!(
        current.to_string_lossy().contains(&format!("/{id2}-")),
        "{current:?}"
    );

    let (ok, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "no request failed across two switches ({ok} succeeded)"
    );
    assert!(ok > 20);
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test]
async fn a_release_that_exits_at_once_fails_its_check_and_the_old_server_goes_on() {
    let s = setup();
    let mut server = ServerProcess::start(&s.envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let before = get_json(&client, server.url("/version")).await;
    let bad = s.repo.commit_files(&[("build.sh", &dead_build())], "dead");
    let id = push(&client, &server, &bad).await;
    let d = wait_status(&client, &server, id, "failed").await;
    assert_eq!(d["stage"], "restart");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("health check"), "{reason}");
    assert!(
        reason.contains("this release cannot start"),
        "the check's output: {reason}"
    );
    let after = get_json(&client, server.url("/version")).await;
    assert_eq!(after, before, "the running server is untouched");
    assert!(server.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn a_release_that_dies_on_start_is_rolled_back_by_the_next_start() {
    let s = setup();
    let mut server = ServerProcess::start(&s.envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let good = s.repo.commit_files(&[("build.sh", &good_build())], "good");
    let good_id = push(&client, &server, &good).await;
    wait_status(&client, &server, good_id, "deployed").await;

    let bad = s
        .repo
        .commit_files(&[("build.sh", &dies_on_start_build())], "dies");
    let bad_id = push(&client, &server, &bad).await;
    // It passes the check, the server becomes it, and it dies.
    let status = eventually(
        Duration::from_secs(120),
        "the switched-to release to die",
        || {
            let exited = server.child.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(!status.success());
    assert!(server.output().contains("dying on start"));

    // The supervisor (systemd, `just run`) starts `current`: still the good release.
    let current = s.dir.path().join("data/current");
    let restarted = ServerProcess::start_binary(&current, &s.envs);
    restarted.wait_healthy().await;
    let d = get_json(
        &client,
        restarted.url(&format!("/api/deployments/{bad_id}")),
    )
    .await;
    assert_eq!(d["status"], "failed");
    assert!(
        d["reason"].as_str().unwrap().contains("did not come up"),
        "{d}"
    );
    let serving = get_json(
        &client,
        restarted.url(&format!("/api/deployments/{good_id}")),
    )
    .await;
    assert_eq!(serving["status"], "deployed");
    let version = get_json(&client, restarted.url("/version")).await;
    assert_eq!(version["commit"], good);
    let list = get_json(&client, restarted.url("/api/deployments")).await;
    assert!(
        list["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "running")
    );
}

#[tokio::test]
async fn a_push_that_arrives_during_the_switch_is_answered_and_deployed_after() {
    let s = setup();
    let server = ServerProcess::start(&s.envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let pid = server.child.id() as u64;
    let v1 = s.repo.commit_files(&[("build.sh", &good_build())], "v1");
    let v2 = s
        .repo
        .commit_files(&[("build.sh", &format!("{}# v2\n", good_build()))], "v2");
    let id1 = push(&client, &server, &v1).await;
    // The server says `Connection: close` once it is draining for the switch; shortly
    // after, it stops accepting and new connections wait in the backlog for the new
    // process. The webhook is sent then.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = server.url("/healthz");
    eventually(
        Duration::from_secs(60),
        "the server to start draining",
        || {
            let req = fresh.get(url.clone()).send();
            async move {
                let res = req.await.ok()?;
                let closing = res
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v == "close");
                closing.then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(selfdeploy::app::LAME_DUCK_MS + 50)).await;
    // On a new connection, as GitHub delivers: an idle kept-alive one could be closed by
    // the old process at the very moment it is reused (HTTP/1.1's own race, which a client
    // answers by retrying; see docs/BENCHMARKS.md).
    let res = push_to(&fresh, &server.url(""), &v2, "v2").await;
    assert_eq!(
        res.status(),
        reqwest::StatusCode::ACCEPTED,
        "answered across the switch"
    );
    let id2 = res.json::<Value>().await.unwrap()["deployment_id"]
        .as_i64()
        .unwrap();
    wait_status(&client, &server, id2, "deployed").await;
    let first = get_json(&client, server.url(&format!("/api/deployments/{id1}"))).await;
    assert_eq!(first["status"], "success");
    let version = get_json(&client, server.url("/version")).await;
    assert_eq!(version["commit"], v2);
    assert_eq!(version["pid"], pid);
}

/// `just run` in a checkout with no settings: the data directory is the relative
/// `selfdeploy-data`, the repository is the checkout's `origin`, the restart is `exec`.
/// Stage commands run in other directories and `current` must resolve from anywhere.
#[tokio::test]
async fn the_defaults_deploy_from_the_checkout_the_server_runs_in() {
    let s = setup();
    let envs: Vec<(&str, String)> = s
        .envs
        .iter()
        .filter(|(k, _)| !["SELFDEPLOY_DATA_DIR", "SELFDEPLOY_REPO"].contains(k))
        .cloned()
        .collect();
    let server = ServerProcess::start_in(&s.repo.work, &envs);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let pid = server.child.id() as u64;
    let v1 = s.repo.commit_files(
        &[
            ("build.sh", &good_build()),
            (".gitignore", "target/\nselfdeploy-data/\n"),
        ],
        "v1",
    );
    let id = push(&client, &server, &v1).await;
    let d = wait_status(&client, &server, id, "deployed").await;
    let version = get_json(&client, server.url("/version")).await;
    assert_eq!(version["commit"], v1);
    assert_eq!(version["pid"], pid);
    let data = s.repo.work.join("selfdeploy-data");
    let current = std::fs::read_link(data.join("current")).unwrap();
    assert!(current.is_absolute(), "{current:?}");
    let release = d["release"].as_str().unwrap();
    assert_eq!(
        std::fs::canonicalize(data.join("current")).unwrap(),
        std::fs::canonicalize(data.join("releases").join(release).join("selfdeploy")).unwrap()
    );
}
