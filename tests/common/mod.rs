//! Test helpers: a real server on 127.0.0.1:0 with a real SQLite file in a temp dir, signed
//! webhooks, and real git repositories (a bare one stands in for GitHub).
#![allow(dead_code)]

use selfdeploy::config::RestartStrategy;
use selfdeploy::secret::WebhookSecret;
use selfdeploy::{App, AppState, Settings};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;

/// The webhook secret every test server uses.
pub const SECRET: &str = "test-secret-0123456789-abcdef";

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub dir: TempDir,
    pub client: reqwest::Client,
}

/// Settings for a test server whose data directory is `dir/data`.
pub fn settings(dir: &Path) -> Settings {
    Settings {
        data_dir: Some(dir.join("data")),
        webhook_secret: Some(SECRET.to_string()),
        repo: Some(dir.join("origin.git").to_string_lossy().into_owned()),
        branch: Some("main".into()),
        restart: Some(RestartStrategy::None),
        ..Default::default()
    }
}

/// Starts a server with the default test settings changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings, &Path)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    tweak(&mut s, dir.path());
    spawn_in(dir, s).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_, _| {}).await
}

pub async fn spawn_in(dir: TempDir, settings: Settings) -> TestApp {
    let config = settings.resolve().expect("valid test settings");
    let app = App::start(config).await.expect("app starts");
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    TestApp {
        addr,
        state,
        dir,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `body` as event `event`, signed, with a fresh delivery id.
    pub async fn webhook(&self, event: &str, body: &str) -> reqwest::Response {
        let delivery = ulid_like();
        self.webhook_with(event, body, &delivery).await
    }

    pub async fn webhook_with(&self, event: &str, body: &str, delivery: &str) -> reqwest::Response {
        self.client
            .post(self.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(body.as_bytes()))
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until no deployment is queued or running.
    pub async fn idle(&self) {
        self.state
            .wait_idle(Duration::from_secs(120))
            .await
            .expect("queue idle");
    }

    pub async fn deployment(&self, id: i64) -> selfdeploy::db::Deployment {
        selfdeploy::db::get(&self.state.db, id)
            .await
            .unwrap()
            .expect("deployment exists")
    }

    /// Rows in `deployments` and in apalis's `Jobs`.
    pub async fn counts(&self) -> (i64, i64) {
        let deployments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deployments")
            .fetch_one(&self.state.db)
            .await
            .unwrap();
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs")
            .fetch_one(&self.state.db)
            .await
            .unwrap();
        (deployments, jobs)
    }
}

pub fn sign(body: &[u8]) -> String {
    selfdeploy::webhook::sign(&WebhookSecret::new(SECRET), body)
}

/// A unique delivery id.
pub fn ulid_like() -> String {
    ulid::Ulid::generate().to_string()
}

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real `push-with-new-branch` payload, retargeted at `branch` and commit `sha`.
pub fn push_payload(branch: &str, sha: &str, message: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("push-with-new-branch.payload.json")).unwrap();
    v["ref"] = format!("refs/heads/{branch}").into();
    v["after"] = sha.into();
    v["head_commit"]["id"] = sha.into();
    v["head_commit"]["message"] = message.into();
    v.to_string()
}

/// Polls `check` until it yields `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tiny crate with no dependencies (builds in about a second) in a bare repository that
/// stands in for GitHub, with a working clone to commit from.
pub struct FixtureRepo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

/// Package name of the fixture crate; its executable is `target/release/<this>`.
pub const FIXTURE_BIN: &str = "fixture-app";

impl FixtureRepo {
    /// Creates the bare `root/origin.git` and a working clone `root/work` pushing to it.
    pub fn init(root: &Path) -> FixtureRepo {
        let bare = root.join("origin.git");
        let work = root.join("work");
        let (bare_path, work_path) = (bare.to_str().unwrap(), work.to_str().unwrap());
        git(
            root,
            &["init", "--quiet", "--bare", "-b", "main", bare_path],
        );
        git(root, &["init", "--quiet", "-b", "main", work_path]);
        git(&work, &["remote", "add", "origin", bare_path]);
        FixtureRepo { bare, work }
    }

    /// Creates `root/origin.git` and `root/work`, with a first commit printing `text`.
    pub fn create(root: &Path, text: &str) -> (FixtureRepo, String) {
        let repo = FixtureRepo::init(root);
        let work = repo.work.clone();
        std::fs::write(
            work.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{FIXTURE_BIN}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            work.join("Cargo.lock"),
            format!("# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n\n[[package]]\nname = \"{FIXTURE_BIN}\"\nversion = \"0.1.0\"\n"),
        )
        .unwrap();
        std::fs::write(work.join(".gitignore"), "target/\n").unwrap();
        let sha = repo.commit_text(text);
        (repo, sha)
    }

    /// Commits a `main.rs` that prints `text`, pushes it, returns the SHA.
    pub fn commit_text(&self, text: &str) -> String {
        self.commit_source(
            &format!("fn main() {{ println!(\"{{}}\", {text:?}); }}\n"),
            text,
        )
    }

    /// Commits `source` as `src/main.rs`, pushes it, returns the SHA.
    pub fn commit_source(&self, source: &str, message: &str) -> String {
        self.commit_files(&[("src/main.rs", source)], message)
    }
}

/// The environment of a `selfdeploy` process deploying from `root/origin.git` into
/// `root/data`, building with `build_command`.
pub fn server_envs(root: &Path, build_command: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "SELFDEPLOY_DATA_DIR",
            root.join("data").display().to_string(),
        ),
        ("SELFDEPLOY_WEBHOOK_SECRET", SECRET.to_string()),
        (
            "SELFDEPLOY_REPO",
            root.join("origin.git").display().to_string(),
        ),
        ("SELFDEPLOY_BUILD_COMMAND", build_command.to_string()),
    ]
}

/// Settings that deploy the fixture crate from `root/origin.git`.
pub fn fixture_settings(s: &mut Settings, root: &Path) {
    s.repo = Some(root.join("origin.git").to_string_lossy().into_owned());
    s.artifact = Some(PathBuf::from(format!("target/release/{FIXTURE_BIN}")));
}

/// The `selfdeploy` binary running as a child process, on a socket this test bound and
/// handed over as fd 3 (the `LISTEN_FDS` convention, as systemd does).
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Where the process's stdout and stderr go.
    pub log: PathBuf,
    _log_dir: TempDir,
}

impl ServerProcess {
    pub fn start(envs: &[(&str, String)]) -> ServerProcess {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_selfdeploy")), envs)
    }

    pub fn start_binary(binary: &Path, envs: &[(&str, String)]) -> ServerProcess {
        Self::spawn(binary, None, envs)
    }

    /// Starts the server with `cwd` as its working directory, as `just run` in a checkout.
    pub fn start_in(cwd: &Path, envs: &[(&str, String)]) -> ServerProcess {
        Self::spawn(Path::new(env!("CARGO_BIN_EXE_selfdeploy")), Some(cwd), envs)
    }

    fn spawn(binary: &Path, cwd: Option<&Path>, envs: &[(&str, String)]) -> ServerProcess {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(binary);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        let child = cmd.spawn().expect("selfdeploy starts");
        drop(listener);
        ServerProcess {
            child,
            addr,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let url = self.url("/healthz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = client.get(&url).send().await
                && res.status().is_success()
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the server did not answer /healthz within 60 s; it printed:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FixtureRepo {
    /// Commits `files` (path, contents), pushes, returns the SHA.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, contents) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "--quiet", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// Sends a signed push for `sha` to a server at `base` (e.g. `http://127.0.0.1:1234`).
pub async fn push_to(
    client: &reqwest::Client,
    base: &str,
    sha: &str,
    message: &str,
) -> reqwest::Response {
    let body = push_payload("main", sha, message);
    client
        .post(format!("{base}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", ulid_like())
        .header("x-hub-signature-256", sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("webhook request")
}

/// Requests `url` in a loop, on fresh connections and on one kept-alive client,
/// counting every failure, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for keep_alive in [true, false] {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let shared = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let client = if keep_alive {
                        shared.clone()
                    } else {
                        reqwest::Client::builder()
                            .pool_max_idle_per_host(0)
                            .build()
                            .unwrap()
                    };
                    match client
                        .get(&url)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("load: status {}", r.status());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("load (keep_alive={keep_alive}): {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A `build.sh` that installs `target/release/selfdeploy` as a launcher script running
/// `body`. The launcher tells the server which release it is from where it lies, as an
/// executable inside the release directory would.
pub fn release_launcher(body: &str) -> String {
    format!(
        "mkdir -p target/release\ncat > target/release/selfdeploy <<'LAUNCHER'\n#!/bin/sh\n\
         SELFDEPLOY_RELEASE=\"$(basename \"$(dirname \"$(readlink -f \"$0\")\")\")\"\n\
         export SELFDEPLOY_RELEASE\n{body}\nLAUNCHER\nchmod +x target/release/selfdeploy\n"
    )
}
