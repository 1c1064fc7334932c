//! Helpers of tests/dashboard.rs: a real app on 127.0.0.1:0, a small SSE reader over
//! reqwest, deployment fixtures, and snapshot files.

use futures::StreamExt;
use futures::stream::BoxStream;
use selfdeploy::config::RestartStrategy;
use selfdeploy::db::{self, Deployment, DeploymentId, NewDeployment, StatusColumn};
use selfdeploy::status::Status;
use selfdeploy::{App, AppState, Settings};
use sha2::Digest;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// A commit message that must show as text, never run.
pub const XSS: &str = "<script>alert(1)</script>";
/// How askama writes [`XSS`].
pub const XSS_ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";

/// How long any single wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub state: AppState,
    pub base: String,
    pub client: reqwest::Client,
    _dir: TempDir,
}

/// Starts the real app, with `tweak` applied to its settings.
pub async fn start_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings {
        data_dir: Some(dir.path().join("data")),
        webhook_secret: Some("a-test-secret-of-enough-length".into()),
        repo: Some(dir.path().join("origin.git").to_string_lossy().into_owned()),
        restart: Some(RestartStrategy::None),
        ..Default::default()
    };
    tweak(&mut settings);
    let config = settings.resolve().expect("valid test settings");
    let app = App::start(config).await.expect("the app starts");
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener, std::future::pending()));
    TestApp {
        state,
        base,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Opens an event stream and checks its headers.
    pub async fn open_stream(&self, path: &str) -> SseReader {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        SseReader::new(resp)
    }

    /// Records a push the way the webhook does (without a queue job, so the worker leaves it
    /// alone) and publishes it. Returns its id.
    pub async fn create(&self, message: &str) -> DeploymentId {
        let mut conn = self.state.db.acquire().await.unwrap();
        let id = db::insert_deployment(&mut conn, &new_deployment(message))
            .await
            .unwrap();
        drop(conn);
        self.state.publish_deployment(id).await;
        id
    }

    /// Moves `id` from `from` to `to` and publishes it.
    pub async fn transition(
        &self,
        id: DeploymentId,
        from: Status,
        to: Status,
        reason: Option<&str>,
    ) {
        assert!(
            db::transition(&self.state.db, id, from, to, reason)
                .await
                .unwrap(),
            "deployment {id} was not {from}"
        );
        self.state.publish_deployment(id).await;
    }

    /// Makes running `id` the serving deployment and publishes it and the one it replaced.
    pub async fn deploy(&self, id: DeploymentId) {
        let previous = db::mark_deployed(&self.state.db, id, Status::Running)
            .await
            .unwrap()
            .expect("it was running");
        self.state.publish_deployment(id).await;
        if let Some(previous) = previous {
            self.state.publish_deployment(previous).await;
        }
    }
}

static NEXT_DELIVERY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn new_deployment(message: &str) -> NewDeployment {
    let n = NEXT_DELIVERY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (author, pusher) = [
        ("Ada Lovelace", "ada"),
        ("Grace Hopper", "grace"),
        ("Ken Thompson", "ken"),
        ("Barbara Liskov", "barbara"),
    ][(n % 4) as usize];
    let digest = sha2::Sha256::digest(format!("{n}:{message}"));
    NewDeployment {
        delivery_id: format!("delivery-{n}"),
        job_id: ulid::Ulid::generate().to_string(),
        repository: "acme/shop".into(),
        git_ref: "refs/heads/main".into(),
        branch: "main".into(),
        sha: hex::encode(digest)[..40].to_string(),
        message: message.into(),
        author: author.into(),
        pusher: pusher.into(),
    }
}

/// A deployment row with fixed values, for rendering tests.
pub fn fixture(id: DeploymentId, status: Status, message: &str) -> Deployment {
    let received_at = 1_796_325_601_000 + id * 60_000;
    let started = !matches!(status, Status::Queued | Status::Superseded);
    let finished = !matches!(status, Status::Queued | Status::Running);
    Deployment {
        id,
        delivery_id: format!("delivery-{id}"),
        job_id: "01JEXAMPLE0000000000000000".into(),
        repository: "acme/shop".into(),
        git_ref: "refs/heads/main".into(),
        branch: "main".into(),
        sha: format!(
            "{:02x}{}",
            id % 256,
            "e5c1b2a3d4f5e6a7b8c9d0e1f2a3b4c5d6e7f8"
        ),
        message: message.into(),
        author: "Grace Hopper".into(),
        pusher: "grace".into(),
        status: StatusColumn(status),
        stage: None,
        reason: None,
        release: None,
        received_at,
        started_at: started.then_some(received_at + 1_500),
        finished_at: (started && finished).then_some(received_at + 1_500 + 65_000),
        log_lines_cut: 0,
    }
}

/// Reads server-sent events from a streaming response body.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
    pub headers: reqwest::header::HeaderMap,
    /// The `id:` of the last message that had one, as a browser keeps it for a reconnect.
    pub last_id: Option<String>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        let headers = resp.headers().clone();
        SseReader {
            body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: String::new(),
            headers,
            last_id: None,
        }
    }

    /// The data of the next message (comments skipped); `None` when the body ended.
    /// Panics after [`DEADLINE`].
    pub async fn next(&mut self) -> Option<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                assert!(
                    !frame.lines().any(|l| l.starts_with("event:")),
                    "named events are not swapped by htmx 4: {frame}"
                );
                let data: Vec<&str> = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                    self.last_id = Some(id.trim_start().to_string());
                }
                return Some(data.join("\n"));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no event within {DEADLINE:?}; buffered: {:?}", self.buf),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            }
        }
    }

    /// The next message, which must exist.
    pub async fn message(&mut self) -> String {
        self.next().await.expect("the stream ended early")
    }
}

/// Waits, up to [`DEADLINE`], until `check` returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `actual` with `tests/snapshots/<name>.html`; `UPDATE_SNAPSHOTS=1` rewrites it.
pub fn snapshot(name: &str, actual: &str) {
    let path = manifest_dir()
        .join("tests/snapshots")
        .join(format!("{name}.html"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "snapshot {name} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (review, then run with UPDATE_SNAPSHOTS=1 to accept)\n--- actual ---\n{actual}",
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
