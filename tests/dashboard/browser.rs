//! A real Chromium (driven by tests/browser/dashboard.mjs) follows a deployment live.

use selfdeploy::db;
use selfdeploy::logs::{LogWriter, Redactor, Stream};
use selfdeploy::status::Status;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::support::{DEADLINE, TestApp, XSS, manifest_dir, start_app};

/// A real Chromium follows one deployment from push to deployed without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sees_live_updates() {
    let chromium =
        std::env::var("SELFDEPLOY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install -y chromium)"
    );
    let browser_dir = manifest_dir().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`"
    );
    let shots = manifest_dir().join("target");
    std::fs::create_dir_all(&shots).unwrap();

    let app = start_app(|_| {}).await;
    seed_history(&app).await;

    let mut node = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(&app.base)
        .arg(&shots)
        .env("SELFDEPLOY_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (is Node.js installed?)");
    let mut to_node = node.stdin.take().unwrap();
    let (tx, mut from_node) = tokio::sync::mpsc::unbounded_channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut expect = async |prefix: &str| -> String {
        let line = tokio::time::timeout(DEADLINE * 3, from_node.recv())
            .await
            .unwrap_or_else(|_| panic!("the browser script did not say {prefix:?} in time"))
            .unwrap_or_else(|| {
                panic!("the browser script ended before {prefix:?} (see its FAIL line above)")
            });
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?} from the browser script, got {line:?}"
        );
        line
    };
    let mut say = |line: String| writeln!(to_node, "{line}").expect("write to the browser script");

    expect("READY").await;
    let id = app.create(&format!("{XSS}\n\nShip the dashboard.")).await;
    say(format!("CREATED {id}"));
    expect(&format!("SEEN queued {id}")).await;
    app.transition(id, Status::Queued, Status::Running, None)
        .await;
    say("RUNNING".into());
    expect(&format!("SEEN running {id}")).await;
    run_stages(&app, id).await;
    app.deploy(id).await;
    say("DEPLOYED".into());
    expect(&format!("SEEN deployed {id}")).await;
    expect("DONE").await;
    drop(to_node);
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    assert!(shots.join("dashboard.png").is_file());
}

/// Runs the four stages of running deployment `id`, with a little log, as the pipeline would.
async fn run_stages(app: &TestApp, id: db::DeploymentId) {
    use selfdeploy::status::Stage;
    let mut log = LogWriter::new(
        app.state.db.clone(),
        app.state.events.clone(),
        id,
        Redactor::default(),
    );
    let steps: [(Stage, &[(Stream, &str)]); 4] = [
        (
            Stage::Fetch,
            &[
                (Stream::Selfdeploy, "$ git fetch --depth 1 origin main"),
                (Stream::Stderr, "From /srv/git/shop"),
            ],
        ),
        (
            Stage::Build,
            &[
                (Stream::Selfdeploy, "$ cargo build --release --locked"),
                (
                    Stream::Stderr,
                    "   Compiling shop v0.4.2 (/var/lib/selfdeploy/workspace)",
                ),
                (
                    Stream::Stderr,
                    "    Finished `release` profile [optimized] target(s) in 48.12s",
                ),
            ],
        ),
        (
            Stage::Install,
            &[(
                Stream::Selfdeploy,
                "installed release 20261203-194210-3f2a1c9",
            )],
        ),
        (
            Stage::Restart,
            &[(Stream::Selfdeploy, "restart strategy: none")],
        ),
    ];
    for (stage, lines) in steps {
        db::start_stage(&app.state.db, id, stage).await.unwrap();
        app.state.publish_deployment(id).await;
        for (stream, line) in lines {
            log.line(*stream, line).await;
        }
        db::finish_stage(&app.state.db, id, stage, Some(0), "ok")
            .await
            .unwrap();
    }
}

/// A few settled deployments so the page looks like one in use.
async fn seed_history(app: &TestApp) {
    let history = [
        ("Initial import", Status::Success, None),
        (
            "Add a health check endpoint",
            Status::Failed,
            Some("build failed (exit 101)"),
        ),
        ("Fix the failing build", Status::Success, None),
        ("Typo in README", Status::Superseded, None),
        ("Render dates in UTC", Status::Deployed, None),
    ];
    for (n, (message, status, reason)) in history.into_iter().enumerate() {
        let id = app.create(message).await;
        match status {
            Status::Superseded => app.transition(id, Status::Queued, status, None).await,
            Status::Deployed => {
                app.transition(id, Status::Queued, Status::Running, None)
                    .await;
                app.deploy(id).await;
            }
            _ => {
                app.transition(id, Status::Queued, Status::Running, None)
                    .await;
                app.transition(id, Status::Running, status, reason).await;
            }
        }
        // Spread the times out as real pushes would be.
        let received = db::now_ms() - (5 - n as i64) * 3_600_000;
        sqlx::query(
            "UPDATE deployments SET received_at = ?, started_at = CASE WHEN started_at IS NULL \
             THEN NULL ELSE ? END, finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE ? END \
             WHERE id = ?",
        )
        .bind(received)
        .bind(received + 1_200)
        .bind(received + 1_200 + 40_000 + n as i64 * 17_000)
        .bind(id)
        .execute(&app.state.db)
        .await
        .unwrap();
    }
}
