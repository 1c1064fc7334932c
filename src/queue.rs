//! The job queue: apalis on the same SQLite file. A [`DeployJob`] names a deployment; the
//! `deployments` table stays the source of truth and the job is only its ticket through
//! the single worker (concurrency 1, one attempt, so never two pipelines at once).

use apalis::prelude::*;
use apalis_sqlite::{Config as QueueConfig, SqliteStorage};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::db::DeploymentId;
use crate::pipeline;

/// The apalis queue name of deployment jobs.
pub const QUEUE: &str = "selfdeploy::deploy";
/// The worker's fixed name: one server runs one worker (see [`reset_worker`]).
pub const WORKER_NAME: &str = "selfdeploy-worker";
/// How often the idle worker looks for a new job, in milliseconds: bounds pick-up latency.
pub const POLL_INTERVAL_MS: u64 = 200;
/// Worker heartbeat, in seconds (apalis defaults to 30).
pub const HEARTBEAT_SECS: u64 = 5;
/// Pause before the supervisor rebuilds a worker that stopped with an error, in seconds.
pub const WORKER_RESTART_DELAY_SECS: u64 = 2;

/// The ticket of one deployment through the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployJob {
    pub deployment_id: DeploymentId,
}

fn queue_config() -> QueueConfig {
    QueueConfig::default()
        .queue(QUEUE)
        // One at a time: with the default of 10 the worker would lock jobs it cannot run yet.
        .batch_size(1)
        .heartbeat_interval(Duration::from_secs(HEARTBEAT_SECS))
}

/// Adds the job of deployment `id` inside the caller's transaction, so the row and its job
/// are written together or not at all.
pub async fn enqueue(
    conn: &mut sqlx::SqliteConnection,
    id: DeploymentId,
    job_id: &str,
) -> anyhow::Result<()> {
    let args = serde_json::to_vec(&DeployJob { deployment_id: id })?;
    let ulid: ulid::Ulid = job_id.parse()?;
    let task = TaskBuilder::new(args)
        .task_id(TaskId::from_ulid(ulid))
        // apalis defaults to 25 attempts; a deployment runs at most once.
        .max_attempts(1)
        .build();
    apalis_sqlite::queries::push_tasks(conn, QUEUE, &[task]).await?;
    Ok(())
}

/// Lets the worker register again at once after a restart: its old row would otherwise
/// block the name for a heartbeat (`WORKER_ALREADY_EXISTS`). Safe because one server
/// process runs at a time on a data directory. It also makes apalis re-enqueue the jobs the
/// old process held; the pipeline only ever runs a deployment that is still `queued`.
pub async fn reset_worker(pool: &sqlx::SqlitePool) -> anyhow::Result<()> {
    sqlx::query("UPDATE Workers SET last_seen = 0 WHERE id = ?")
        .bind(WORKER_NAME)
        .execute(pool)
        .await?;
    Ok(())
}

async fn handle(job: DeployJob, state: Data<AppState>) -> Result<(), BoxDynError> {
    // Failures are recorded on the deployment; the job itself always succeeds, so apalis
    // never retries a deployment.
    pipeline::run(&state, job.deployment_id).await;
    Ok(())
}

/// Runs the worker until `stop` is cancelled, rebuilding it if it dies.
pub async fn run_worker(state: AppState, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        if let Err(e) = reset_worker(&state.db).await {
            tracing::error!("cannot reset the worker registration: {e:#}");
        }
        let storage = SqliteStorage::<DeployJob>::new(&state.db).with_config(queue_config());
        let worker = WorkerBuilder::new(WORKER_NAME)
            .backend(storage.poll_with_interval(Duration::from_millis(POLL_INTERVAL_MS)))
            .data(state.clone())
            .concurrency(1)
            .build(handle);
        let stopped = stop.clone();
        match worker
            .run_until(async move {
                stopped.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::error!("deployment worker stopped: {e}; restarting it");
                state
                    .worker_down
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(WORKER_RESTART_DELAY_SECS)) => {}
                }
                state
                    .worker_down
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}
