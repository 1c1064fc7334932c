//! The application: its shared state, the router, and `serve` on a listener the caller
//! already bound, until a shutdown future resolves or a new release takes over.

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use sqlx::SqlitePool;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::db::{self, DeploymentId};
use crate::events::{Event, Events};
use crate::restart::{self, Exit, Handover};
use crate::secret::{self, SecretOrigin, WebhookSecret};
use crate::{about, api, queue, webhook};

/// How long in-flight requests may take to finish when the server stops, in seconds.
pub const DRAIN_TIMEOUT_SECS: u64 = 10;
/// Before it stops accepting, how long the server keeps answering with `Connection: close`,
/// in milliseconds: keep-alive clients learn to reconnect (to the kernel's backlog, then
/// the next process) instead of racing a close on an idle connection.
pub const LAME_DUCK_MS: u64 = 300;
/// After it stops accepting, how long connections it accepted last get to send their
/// request before idle ones are closed, in milliseconds.
pub const LAST_REQUEST_GRACE_MS: u64 = 100;

/// Everything a handler or the worker needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: SqlitePool,
    pub events: Events,
    pub secret: WebhookSecret,
    /// Set while the worker is being rebuilt after an error.
    pub worker_down: Arc<AtomicBool>,
    /// Cancelled when the server stops: ends the worker, event streams and HTTP.
    pub shutdown: CancellationToken,
    /// When this process started, in Unix milliseconds.
    pub started_at: i64,
    /// The release this process runs, when it runs one.
    pub release: Option<String>,
    /// Dashboard event streams open now (capped by `config.max_event_streams`).
    pub event_streams: Arc<AtomicUsize>,
    /// The release to become once stopped (set by the `exec` restart).
    exec: Arc<Mutex<Option<(PathBuf, String)>>>,
}

impl AppState {
    pub fn new(config: Config, db: SqlitePool, secret: WebhookSecret) -> AppState {
        let release = restart::own_release(&config.data_dir);
        AppState {
            config: Arc::new(config),
            db,
            events: Events::new(),
            secret,
            worker_down: Arc::new(AtomicBool::new(false)),
            shutdown: CancellationToken::new(),
            started_at: db::now_ms(),
            release,
            event_streams: Arc::default(),
            exec: Arc::default(),
        }
    }

    /// Re-reads deployment `id` after a write and publishes it.
    pub async fn publish_deployment(&self, id: DeploymentId) {
        match db::get(&self.db, id).await {
            Ok(Some(deployment)) => self.events.publish(Event::Deployment(Box::new(deployment))),
            Ok(None) => {}
            Err(e) => tracing::warn!(deployment = id, "cannot publish a deployment: {e}"),
        }
    }

    /// Asks the server to stop (after the current job) and become `executable`.
    pub fn request_exec(&self, executable: PathBuf, release: String) {
        *self.exec.lock().expect("exec slot") = Some((executable, release));
        self.shutdown.cancel();
    }

    /// Waits until no deployment is queued or running, or fails after `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.events.subscribe();
        loop {
            if db::pending_count(&self.db).await? == 0 {
                return Ok(());
            }
            // Woken by any event; the short tick covers writes made by another process.
            let tick = tokio::time::Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep_until(tick.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the queue was not idle within {timeout:?}");
            }
        }
    }
}

/// A started application: state ready, start-up reconciliation done, worker running.
pub struct App {
    pub state: AppState,
    worker: tokio::task::JoinHandle<()>,
    taking_over: Option<Handover>,
}

impl App {
    /// Opens the data directory and database, settles what a previous process left
    /// running, and starts the worker.
    pub async fn start(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let (secret, origin) = secret::load(&config.secret)?;
        match origin {
            SecretOrigin::Generated(path) => tracing::warn!(
                "generated a webhook secret in {} (readable by its owner only). Paste its \
                 contents into GitHub: repository Settings > Webhooks > Secret",
                path.display()
            ),
            SecretOrigin::File(path) => {
                tracing::info!("webhook secret read from {}", path.display())
            }
            SecretOrigin::Given => tracing::info!("webhook secret given by the environment"),
        }
        let pool = db::open(&config.data_dir).await?;
        let state = AppState::new(config, pool, secret);
        let taking_over = restart::reconcile(&state).await?;
        let worker = tokio::spawn(queue::run_worker(state.clone(), state.shutdown.clone()));
        Ok(App {
            state,
            worker,
            taking_over,
        })
    }

    /// Serves on `listener` until `shutdown` resolves or a restart asks for the switch;
    /// then stops taking jobs, lets the current one finish, drains requests (bounded) and
    /// ends event streams. Says whether to exec a new release.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Exit> {
        let token = self.state.shutdown.clone();
        tokio::spawn({
            let token = token.clone();
            async move {
                tokio::select! {
                    _ = shutdown => token.cancel(),
                    _ = token.cancelled() => {}
                }
            }
        });
        // axum closes its listener when it stops; this copy keeps the socket open (and
        // connections queueing in its backlog) for the hand-over.
        let kept = listener
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the listener")?;
        let local = listener.local_addr()?;
        // The switch, in steps: answer with `Connection: close`; stop accepting (the
        // backlog keeps new connections for the next process); give the connections
        // accepted last time to send their request; then close the idle ones and wait for
        // the requests in flight.
        let draining = Arc::new(AtomicBool::new(false));
        let stop_accepting = CancellationToken::new();
        let close_idle = CancellationToken::new();
        tokio::spawn({
            let (token, draining) = (token.clone(), draining.clone());
            let (stop_accepting, close_idle) = (stop_accepting.clone(), close_idle.clone());
            async move {
                token.cancelled().await;
                draining.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(LAME_DUCK_MS)).await;
                stop_accepting.cancel();
                tokio::time::sleep(Duration::from_millis(LAST_REQUEST_GRACE_MS)).await;
                close_idle.cancel();
            }
        });
        let listener = crate::socket::PausableListener {
            inner: listener,
            stop: stop_accepting,
        };
        let app = router(self.state.clone()).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let draining = draining.clone();
                async move {
                    let mut response = next.run(request).await;
                    if draining.load(Ordering::Relaxed) {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    response
                }
            },
        ));
        let server =
            axum::serve(listener, app).with_graceful_shutdown(close_idle.cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());
        if let Some(handover) = &self.taking_over {
            tokio::select! {
                result = &mut server => { result.context("serving HTTP")?; }
                ready = confirm_serving(&self.state, local, handover) => ready?,
            }
        }
        let drained = async {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_secs(DRAIN_TIMEOUT_SECS)).await;
        };
        tokio::select! {
            result = &mut server => result.context("serving HTTP")?,
            _ = drained => tracing::warn!("requests still open after {DRAIN_TIMEOUT_SECS} s; stopping anyway"),
        }
        // The worker stops after its current job, whose result apalis records first.
        self.worker.await.context("the worker task")?;
        let exec = self.state.exec.lock().expect("exec slot").take();
        self.state.db.close().await;
        Ok(match exec {
            Some((executable, release)) => Exit::Exec {
                executable,
                release,
                listener: kept,
            },
            None => Exit::Stopped,
        })
    }
}

/// After a hand-over: once this process answers its own `/healthz`, its deployment is live.
async fn confirm_serving(
    state: &AppState,
    local: std::net::SocketAddr,
    handover: &Handover,
) -> anyhow::Result<()> {
    let host = local.to_string();
    let (status, _) = crate::probe::get(&host, "/healthz", &[]).await?;
    if status != 200 {
        anyhow::bail!("the new release answers /healthz with {status}");
    }
    restart::complete_handover(state, handover).await
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .route("/pushevent", post(webhook::receive))
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES))
        .merge(api::routes())
        .merge(about::routes())
        .merge(crate::dashboard::routes())
        // Skips event streams by default; shrinks htmx and the pages about threefold.
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Starts the application and serves until `shutdown`: what `main` calls.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    App::start(config).await?.serve(listener, shutdown).await
}
