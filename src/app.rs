//! The application: its shared state, the router, and `serve` on a listener the caller
//! already bound, until a shutdown future resolves.

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use sqlx::SqlitePool;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::db::{self, DeploymentId};
use crate::events::{Event, Events};
use crate::secret::{self, SecretOrigin, WebhookSecret};
use crate::{api, queue, restart, webhook};

/// Everything a handler or the worker needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: SqlitePool,
    pub events: Events,
    pub secret: WebhookSecret,
    /// Set while the worker is being rebuilt after an error.
    pub worker_down: Arc<AtomicBool>,
    /// Cancelled when the server shuts down: ends the worker and event streams.
    pub shutdown: CancellationToken,
    /// When this process started, in Unix milliseconds.
    pub started_at: i64,
    /// Dashboard event streams open now (capped by `config.max_event_streams`).
    pub event_streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl AppState {
    /// Re-reads deployment `id` after a write and publishes it.
    pub async fn publish_deployment(&self, id: DeploymentId) {
        match db::get(&self.db, id).await {
            Ok(Some(deployment)) => self.events.publish(Event::Deployment(Box::new(deployment))),
            Ok(None) => {}
            Err(e) => tracing::warn!(deployment = id, "cannot publish a deployment: {e}"),
        }
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
        let db = db::open(&config.data_dir).await?;
        let state = AppState {
            config: Arc::new(config),
            db,
            events: Events::new(),
            secret,
            worker_down: Arc::new(AtomicBool::new(false)),
            shutdown: CancellationToken::new(),
            started_at: db::now_ms(),
            event_streams: Arc::default(),
        };
        restart::reconcile(&state).await?;
        let worker = tokio::spawn(queue::run_worker(state.clone(), state.shutdown.clone()));
        Ok(App { state, worker })
    }

    /// Serves on `listener` until `shutdown` resolves (or the state's token is
    /// cancelled), then stops the worker after its current job.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
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
        let router = router(self.state.clone());
        axum::serve(listener, router)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        self.worker.await.context("the worker task")?;
        Ok(())
    }
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .route("/pushevent", post(webhook::receive))
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES))
        .merge(api::routes())
        .merge(crate::dashboard::routes())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Starts the application and serves until `shutdown`: what `main` calls.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    App::start(config).await?.serve(listener, shutdown).await
}
