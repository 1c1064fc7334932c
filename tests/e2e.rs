//! The original demo, automated: the server runs from a clone of this project, deploys
//! itself with the real pipeline and a real `cargo build`, and four quick pushes each
//! change what `/test` answers. The first deploys, the ones that arrive meanwhile wait,
//! only the newest of them runs next, and `/test` ends with the last pushed text.
//!
//! The nested build uses its own persistent target directory (`target/e2e-nested`, or
//! `SELFDEPLOY_E2E_TARGET_DIR`): the outer build's stays locked while tests run. Its first
//! build starts from copies of the dependencies the outer build compiled
//! (`seed_nested_target`), so it compiles only a few crates and this one; later builds are
//! incremental.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cold nested build of the whole server takes minutes on two cores.
const BUILD_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// Copies this project's files (tracked, and untracked but not ignored) into `dest`.
fn copy_project(dest: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = git(
        source,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    for file in files.split('\0').filter(|f| !f.is_empty()) {
        let from = source.join(file);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = dest.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
}

/// Sets `TEST_TEXT` in the clone's source.
fn set_test_text(work: &Path, text: &str) {
    let path = work.join("src/about.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let start = source
        .find("pub const TEST_TEXT: &str = \"")
        .expect("TEST_TEXT in about.rs");
    let end = start + source[start..].find(";\n").unwrap();
    let updated = format!(
        "{}pub const TEST_TEXT: &str = {text:?}{}",
        &source[..start],
        &source[end..]
    );
    std::fs::write(path, updated).unwrap();
}

fn nested_target_dir() -> PathBuf {
    std::env::var_os("SELFDEPLOY_E2E_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-nested"))
}

/// Fills a nested target directory that has never built anything with the dependencies
/// the outer `cargo test` already compiled (same versions, same profile), so its first build
/// compiles a few crates instead of all of them (about 1 minute instead of 4 on two
/// cores). Copies, with their times kept (cargo's freshness checks read them), the
/// fingerprints, build-script outputs and libraries, but not the test executables or this
/// crate's own artifacts, which the nested build makes from its own source.
fn seed_nested_target(nested: &Path) {
    let outer = Path::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .parent()
        .expect("the outer profile directory");
    let dest = nested.join("debug");
    if dest.join(".fingerprint").exists() {
        return;
    }
    std::fs::create_dir_all(dest.join("deps")).unwrap();
    let libraries: Vec<PathBuf> = std::fs::read_dir(outer.join("deps"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            let ours = name.starts_with("selfdeploy") || name.starts_with("libselfdeploy");
            let library = [".rlib", ".rmeta", ".so", ".d"]
                .iter()
                .any(|ext| name.ends_with(ext));
            library && !ours
        })
        .collect();
    let copy = |sources: &[PathBuf], into: &Path| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .args(sources)
            .arg(into)
            .status()
            .unwrap();
        assert!(status.success(), "seeding {} failed", into.display());
    };
    copy(&libraries, &dest.join("deps"));
    copy(&[outer.join("build"), outer.join(".fingerprint")], &dest);
}

/// Follows `/api/events`, reconnecting with `Last-Event-ID` across restarts, and records
/// every (deployment, status) in the order received.
fn follow_events(
    base: String,
    seen: Arc<Mutex<Vec<(i64, i64, String)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut last = 0i64;
        loop {
            let response = client
                .get(format!("{base}/api/events?after=0"))
                .header("last-event-id", last.to_string())
                .send()
                .await;
            let Ok(response) = response else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let message: String = buffer.drain(..end + 2).collect();
                    let data: String = message
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .collect();
                    if data.is_empty() {
                        continue; // keep-alive
                    }
                    let change: Value = serde_json::from_str(&data).unwrap();
                    last = change["id"].as_i64().unwrap();
                    seen.lock().unwrap().push((
                        last,
                        change["deployment_id"].as_i64().unwrap(),
                        change["status"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    })
}

#[tokio::test]
async fn four_quick_pushes_deploy_the_first_and_then_only_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let repo = FixtureRepo::init(root);
    let work = repo.work.clone();
    copy_project(&work);
    repo.commit_files(&[], "selfdeploy, as it is");

    let target = nested_target_dir();
    seed_nested_target(&target);
    let builds = root.join("builds.log");
    let build = format!(
        "git rev-parse HEAD >> {builds}; cargo build --locked --bin selfdeploy --target-dir {target} \
         && mkdir -p target/release && cp {target}/debug/selfdeploy target/release/selfdeploy",
        builds = builds.display(),
        target = target.display(),
    );
    let mut envs = server_envs(root, &build);
    envs.push((
        "SELFDEPLOY_TIME_LIMIT",
        BUILD_DEADLINE.as_secs().to_string(),
    ));
    envs.push(("SELFDEPLOY_HEALTH_TIMEOUT", "60".to_string()));
    let mut server = ServerProcess::start(&envs);
    server.wait_healthy().await;
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let base = server.url("");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let follower = follow_events(base.clone(), seen.clone());
    let load = Load::start(server.url("/test"));

    let mut shas = Vec::new();
    let mut ids = Vec::new();
    for n in 1..=4 {
        set_test_text(&work, &format!("e2e text {n}"));
        let sha = repo.commit_files(&[], &format!("/test says e2e text {n}"));
        let res = push_to(&client, &base, &sha, &format!("/test says e2e text {n}")).await;
        assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
        ids.push(
            res.json::<Value>().await.unwrap()["deployment_id"]
                .as_i64()
                .unwrap(),
        );
        shas.push(sha);
        if n == 1 {
            // The rest arrive while the first one builds.
            eventually(
                Duration::from_secs(30),
                "the first deployment to start",
                || {
                    let url = format!("{base}/api/deployments/{}", ids[0]);
                    let req = client.get(url).send();
                    async move {
                        let d: Value = req.await.ok()?.json().await.ok()?;
                        (d["status"] == "running").then_some(())
                    }
                },
            )
            .await;
        }
    }

    eventually(BUILD_DEADLINE, "the newest push to be deployed", || {
        let url = format!("{base}/api/deployments/{}", ids[3]);
        let req = client.get(url).send();
        let server_alive = server.child.try_wait().unwrap().is_none();
        async move {
            assert!(server_alive, "the server process ended");
            let d: Value = req.await.ok()?.json().await.ok()?;
            let status = d["status"].as_str()?.to_string();
            assert!(
                !["failed", "stale", "superseded"].contains(&status.as_str()),
                "{d}"
            );
            (status == "deployed").then_some(())
        }
    })
    .await;

    let (ok, failed) = load.finish().await;
    let get = |path: String| {
        let client = client.clone();
        async move { client.get(path).send().await.unwrap() }
    };
    assert_eq!(
        get(format!("{base}/test")).await.text().await.unwrap(),
        "e2e text 4"
    );
    let version: Value = get(format!("{base}/version")).await.json().await.unwrap();
    assert_eq!(version["commit"], shas[3].as_str());
    assert_eq!(version["pid"], pid, "the process kept its PID");
    assert_eq!(
        failed, 0,
        "a client requesting /test the whole time saw no failure ({ok} ok)"
    );

    let built = std::fs::read_to_string(&builds).unwrap();
    assert_eq!(
        built.lines().collect::<Vec<_>>(),
        [shas[0].as_str(), shas[3].as_str()],
        "two builds"
    );
    let status = |id: i64| {
        let url = format!("{base}/api/deployments/{id}");
        async move {
            get(url).await.json::<Value>().await.unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(status(ids[0]).await, "success");
    assert_eq!(status(ids[1]).await, "superseded");
    assert_eq!(status(ids[2]).await, "superseded");
    assert_eq!(status(ids[3]).await, "deployed");

    // Every status change reached the event stream, once each, in order.
    eventually(
        Duration::from_secs(10),
        "the last status change on the stream",
        || {
            let done = seen
                .lock()
                .unwrap()
                .iter()
                .any(|(_, id, s)| *id == ids[3] && s == "deployed");
            async move { done.then_some(()) }
        },
    )
    .await;
    follower.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in order, none twice: {seen:?}"
    );
    let of = |id: i64| -> Vec<&str> {
        seen.iter()
            .filter(|(_, d, _)| *d == id)
            .map(|(_, _, s)| s.as_str())
            .collect()
    };
    assert_eq!(of(ids[0]), ["queued", "running", "deployed", "success"]);
    assert_eq!(of(ids[1]), ["queued", "superseded"]);
    assert_eq!(of(ids[2]), ["queued", "superseded"]);
    assert_eq!(of(ids[3]), ["queued", "running", "deployed"]);
    server.kill9();
}
