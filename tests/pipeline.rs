//! The pipeline with real git, real cargo and real HTTP: a fixture crate in a bare
//! repository stands in for GitHub, pushes arrive as signed webhooks.

mod common;

use common::*;
use selfdeploy::events::Event;
use selfdeploy::status::Status;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

async fn push(app: &TestApp, sha: &str, message: &str) -> i64 {
    let res = app
        .webhook("push", &push_payload("main", sha, message))
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["deployment_id"]
        .as_i64()
        .unwrap()
}

fn run_release(app: &TestApp, release: &str) -> String {
    let exe = app
        .state
        .config
        .data_dir
        .join("releases")
        .join(release)
        .join(FIXTURE_BIN);
    let out = std::process::Command::new(&exe)
        .output()
        .expect("release runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_push_is_fetched_built_and_installed_as_a_release() {
    let app = spawn_app_with(fixture_settings).await;
    let (repo, first) = FixtureRepo::create(app.dir.path(), "hello from v1");
    let mut events = app.state.events.subscribe();
    let id = push(&app, &first, "v1").await;
    app.idle().await;
    let d = app.deployment(id).await;
    assert_eq!(
        d.status(),
        Status::Success,
        "restart none: installed; reason {:?}",
        d.reason
    );
    let release = d.release.clone().expect("release recorded");
    assert!(release.starts_with(&format!("{id}-{}", &first[..7])));
    assert_eq!(run_release(&app, &release), "hello from v1");
    let stages = selfdeploy::db::stages(&app.state.db, id).await.unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fetch", "build", "install", "restart"]);
    assert!(
        stages
            .iter()
            .all(|s| s.outcome.as_deref() == Some("ok") && s.finished_at.is_some())
    );

    // Published: the status changes in order, and log lines.
    let mut statuses = Vec::new();
    let mut log_lines = 0;
    // Events are published just after their writes commit: read until the final one.
    while statuses.last() != Some(&Status::Success) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the final status is published")
            .expect("no event lost");
        match event {
            Event::Deployment(d) if d.id == id && statuses.last() != Some(&d.status()) => {
                statuses.push(d.status());
            }
            Event::Log { deployment_id, .. } if deployment_id == id => log_lines += 1,
            _ => {}
        }
    }
    assert_eq!(statuses, [Status::Queued, Status::Running, Status::Success]);
    assert!(log_lines > 3, "stage output was published");

    // The workspace is a clone, detached at the exact SHA.
    let ws = app.state.config.data_dir.join("workspace");
    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), first);

    // A second push builds the new commit incrementally in the same workspace.
    let second = repo.commit_text("hello from v2");
    let id2 = push(&app, &second, "v2").await;
    app.idle().await;
    let d2 = app.deployment(id2).await;
    assert_eq!(d2.status(), Status::Success);
    assert_eq!(
        run_release(&app, d2.release.as_deref().unwrap()),
        "hello from v2"
    );
}

#[tokio::test]
async fn a_commit_that_does_not_compile_fails_at_build_and_keeps_the_release() {
    let app = spawn_app_with(fixture_settings).await;
    let (repo, good) = FixtureRepo::create(app.dir.path(), "good");
    let id = push(&app, &good, "good").await;
    app.idle().await;
    let release = app.deployment(id).await.release.unwrap();

    let bad = repo.commit_source("fn main() { this is not rust }\n", "broken");
    let bad_id = push(&app, &bad, "broken").await;
    app.idle().await;
    let d = app.deployment(bad_id).await;
    assert_eq!(d.status(), Status::Failed);
    assert_eq!(d.stage.as_deref(), Some("build"));
    let reason = d.reason.unwrap();
    assert!(reason.contains("build command failed"), "{reason}");
    assert!(
        reason.contains("error"),
        "the reason carries the last lines: {reason}"
    );
    assert!(d.release.is_none());
    assert_eq!(
        run_release(&app, &release),
        "good",
        "the previous release is intact"
    );
}

#[tokio::test]
async fn a_sha_that_does_not_exist_fails_at_fetch() {
    let app = spawn_app_with(fixture_settings).await;
    FixtureRepo::create(app.dir.path(), "x");
    let id = push(&app, &"1234567890abcdef".repeat(3)[..40], "ghost").await;
    app.idle().await;
    let d = app.deployment(id).await;
    assert_eq!(d.status(), Status::Failed);
    assert_eq!(d.stage.as_deref(), Some("fetch"));
    assert!(d.reason.unwrap().contains("cannot be fetched"));
}

fn pid_alive(pid: i32) -> bool {
    // A zombie has exited; only a running or sleeping process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_build_past_its_time_limit_is_stale_and_leaves_no_process() {
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.time_limit = Some(2);
        // Hangs, after starting a grandchild that would outlive a plain kill.
        s.build_command = Some(format!(
            "sleep 300 & echo $! > {}; echo $$ > {}; sleep 300",
            root.join("grandchild.pid").display(),
            root.join("child.pid").display()
        ));
    })
    .await;
    let (_repo, sha) = FixtureRepo::create(app.dir.path(), "hang");
    let id = push(&app, &sha, "hang").await;
    app.idle().await;
    let d = app.deployment(id).await;
    assert_eq!(d.status(), Status::Stale);
    assert_eq!(d.stage.as_deref(), Some("build"));
    let read_pid = |name: &str| -> i32 {
        std::fs::read_to_string(app.dir.path().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (child, grandchild) = (read_pid("child.pid"), read_pid("grandchild.pid"));
    eventually(
        Duration::from_secs(10),
        "the build's processes to die",
        || async { (!pid_alive(child) && !pid_alive(grandchild)).then_some(()) },
    )
    .await;

    // The queue goes on.
    let next = FixtureRepo {
        bare: app.dir.path().join("origin.git"),
        work: app.dir.path().join("work"),
    }
    .commit_text("after");
    let id2 = push(&app, &next, "after").await;
    app.idle().await;
    assert_eq!(
        app.deployment(id2).await.status(),
        Status::Stale,
        "same hanging build, same end"
    );
}

#[tokio::test]
async fn a_burst_of_pushes_during_a_build_ends_with_one_build_of_the_newest() {
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        // Each build records its commit, then waits for the gate the test opens.
        s.build_command = Some(format!(
            "git rev-parse HEAD >> {builds}; while [ ! -e {gate} ]; do sleep 0.05; done; cargo build --release --locked",
            builds = root.join("builds.log").display(),
            gate = root.join("gate").display()
        ));
    })
    .await;
    let root = app.dir.path().to_path_buf();
    let (repo, first) = FixtureRepo::create(&root, "v0");
    let first_id = push(&app, &first, "v0").await;
    eventually(
        Duration::from_secs(60),
        "the first build to start",
        || async {
            let d = app.deployment(first_id).await;
            (d.stage.as_deref() == Some("build")).then_some(())
        },
    )
    .await;
    let mut ids = Vec::new();
    let mut shas = Vec::new();
    for n in 1..=10 {
        let sha = repo.commit_text(&format!("v{n}"));
        ids.push(push(&app, &sha, &format!("v{n}")).await);
        shas.push(sha);
    }
    std::fs::write(root.join("gate"), "open").unwrap();
    app.idle().await;

    let builds = std::fs::read_to_string(root.join("builds.log")).unwrap();
    let built: Vec<&str> = builds.lines().collect();
    assert_eq!(
        built,
        [first.as_str(), shas[9].as_str()],
        "exactly one more build, of the newest"
    );
    assert_eq!(app.deployment(first_id).await.status(), Status::Success);
    for id in &ids[..9] {
        assert_eq!(app.deployment(*id).await.status(), Status::Superseded);
    }
    assert_eq!(app.deployment(ids[9]).await.status(), Status::Success);
}

#[tokio::test]
async fn secrets_printed_by_the_build_never_reach_logs_or_events() {
    const CANARY_ENV: &str = "SELFDEPLOY_TEST_CANARY";
    const CANARY: &str = "canary-value-7f3a9c";
    // SAFETY: set before the server starts any thread that reads the environment for it.
    unsafe { std::env::set_var(CANARY_ENV, CANARY) };
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.secret_env = Some(vec![CANARY_ENV.to_string()]);
        s.build_command = Some(format!(
            "echo secret={SECRET}; echo canary=${CANARY_ENV} >&2; cargo build --release --locked"
        ));
    })
    .await;
    let (_repo, sha) = FixtureRepo::create(app.dir.path(), "quiet");
    let mut events = app.state.events.subscribe();
    let id = push(&app, &sha, "canary").await;
    app.idle().await;
    assert_eq!(app.deployment(id).await.status(), Status::Success);
    let lines = selfdeploy::db::log_lines(&app.state.db, id, 0)
        .await
        .unwrap();
    let all: Vec<String> = lines.iter().map(|l| l.line.clone()).collect();
    assert!(all.iter().any(|l| l == "secret=***"), "{all:?}");
    assert!(all.iter().any(|l| l == "canary=***"), "{all:?}");
    let mut published = String::new();
    while let Ok(event) = events.try_recv() {
        published.push_str(&serde_json::to_string(&event).unwrap());
    }
    assert!(published.contains("canary=***"));
    for text in [all.join("\n"), published] {
        assert!(!text.contains(SECRET) && !text.contains(CANARY));
    }
}

#[tokio::test]
async fn a_chatty_build_keeps_head_and_tail_of_its_log() {
    use selfdeploy::logs::{HEAD_LINES, TAIL_LINES};
    let total = HEAD_LINES + TAIL_LINES + 500;
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.build_command = Some(format!("seq 1 {total}; cargo build --release --locked"));
    })
    .await;
    let (_repo, sha) = FixtureRepo::create(app.dir.path(), "chatty");
    let id = push(&app, &sha, "chatty").await;
    app.idle().await;
    let d = app.deployment(id).await;
    assert!(d.log_lines_cut >= 500, "cut {}", d.log_lines_cut);
    let lines = selfdeploy::db::log_lines(&app.state.db, id, 0)
        .await
        .unwrap();
    assert!(lines.len() as i64 <= HEAD_LINES + TAIL_LINES);
    let texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    assert!(texts.contains(&"1"), "the head is kept");
    assert!(
        texts.contains(&total.to_string().as_str()),
        "the tail is kept"
    );
    assert!(
        !texts.contains(&(HEAD_LINES + 10).to_string().as_str()),
        "the middle is cut"
    );
}

#[tokio::test]
async fn restart_command_marks_deployed_and_the_previous_success() {
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.restart = Some(selfdeploy::config::RestartStrategy::Command);
        s.restart_command = Some(format!("touch {}", root.join("restarted").display()));
    })
    .await;
    let (repo, first) = FixtureRepo::create(app.dir.path(), "one");
    let id1 = push(&app, &first, "one").await;
    app.idle().await;
    assert_eq!(app.deployment(id1).await.status(), Status::Deployed);
    assert!(app.dir.path().join("restarted").exists());
    let current = std::fs::read_link(app.state.config.data_dir.join("current")).unwrap();
    assert!(current.starts_with(app.state.config.data_dir.join("releases")));
    let second = repo.commit_text("two");
    let id2 = push(&app, &second, "two").await;
    app.idle().await;
    assert_eq!(app.deployment(id2).await.status(), Status::Deployed);
    assert_eq!(app.deployment(id1).await.status(), Status::Success);
    let serving = selfdeploy::db::serving(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serving.id, id2);
    assert!(
        Path::new(&std::fs::read_link(app.state.config.data_dir.join("current")).unwrap())
            .to_string_lossy()
            .contains(&format!("{id2}-"))
    );
}

#[tokio::test]
async fn old_releases_are_pruned_but_never_the_serving_one_or_the_one_before() {
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.keep_releases = Some(2);
        s.restart = Some(selfdeploy::config::RestartStrategy::Command);
        s.restart_command = Some("true".into());
    })
    .await;
    let (repo, first) = FixtureRepo::create(app.dir.path(), "r1");
    let mut ids = vec![push(&app, &first, "r1").await];
    app.idle().await;
    for n in 2..=4 {
        let sha = repo.commit_text(&format!("r{n}"));
        ids.push(push(&app, &sha, &format!("r{n}")).await);
        app.idle().await;
    }
    let releases_dir = app.state.config.data_dir.join("releases");
    let mut on_disk: Vec<String> = std::fs::read_dir(&releases_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    // Pruned when release 4 was installed: the newest two (4 and 3) stay, 2 stays too as
    // the one before the serving one (3, at that moment), and 1 goes.
    let mut expected = Vec::new();
    for id in [ids[1], ids[2], ids[3]] {
        expected.push(app.deployment(id).await.release.unwrap());
    }
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "the serving release and the one before it stay"
    );
    assert_eq!(app.deployment(ids[3]).await.status(), Status::Deployed);
}

#[tokio::test]
async fn a_commit_already_queued_running_or_deployed_is_not_built_again() {
    let app = spawn_app_with(|s, root| {
        fixture_settings(s, root);
        s.restart = Some(selfdeploy::config::RestartStrategy::Command);
        s.restart_command = Some("true".into());
        s.build_command = Some(format!(
            "while [ ! -e {gate} ]; do sleep 0.05; done; cargo build --release --locked",
            gate = root.join("gate").display()
        ));
    })
    .await;
    let (_repo, sha) = FixtureRepo::create(app.dir.path(), "once");
    let body = push_payload("main", &sha, "once");
    let id = push(&app, &sha, "once").await;
    let again = |expected: &'static str| {
        let (app, body) = (&app, body.clone());
        async move {
            let res = app.webhook("push", &body).await;
            assert_eq!(res.status(), reqwest::StatusCode::OK, "{expected}");
            let answer: Value = res.json().await.unwrap();
            assert_eq!(answer["deployment_id"], id, "{answer}");
            assert_eq!(answer["status"], expected, "{answer}");
            assert!(
                answer["ignored"].as_str().unwrap().contains("already"),
                "{answer}"
            );
        }
    };
    eventually(Duration::from_secs(30), "the build to start", || async {
        (app.deployment(id).await.status() == Status::Running).then_some(())
    })
    .await;
    again("running").await;
    std::fs::write(app.dir.path().join("gate"), "open").unwrap();
    app.idle().await;
    assert_eq!(app.deployment(id).await.status(), Status::Deployed);
    again("deployed").await;
    assert_eq!(app.counts().await.0, 1, "no second deployment");
}
