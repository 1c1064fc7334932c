//! What a deployment did: its stages, its log lines and the history of its statuses.

use serde::Serialize;
use sqlx::{FromRow, SqlitePool};

use super::{DeploymentId, now_ms};
use crate::status::Stage;

/// One row of `stages`.
#[derive(Clone, Debug, Serialize, FromRow)]
pub struct StageRow {
    pub name: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
}

/// One stored log line.
#[derive(Clone, Debug, Serialize, FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub stream: String,
    pub line: String,
    pub at: i64,
}

/// Records the stage a running deployment entered, and opens its `stages` row.
pub async fn start_stage(pool: &SqlitePool, id: DeploymentId, stage: Stage) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE deployments SET stage = ? WHERE id = ? AND status = 'running'")
        .bind(stage.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT OR REPLACE INTO stages (deployment_id, name, started_at) VALUES (?, ?, ?)")
        .bind(id)
        .bind(stage.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Closes a stage's row with its exit code and outcome (`ok`, `failed`, `timed_out`).
pub async fn finish_stage(
    pool: &SqlitePool,
    id: DeploymentId,
    stage: Stage,
    exit_code: Option<i32>,
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stages SET finished_at = ?, exit_code = ?, outcome = ? \
         WHERE deployment_id = ? AND name = ?",
    )
    .bind(now_ms())
    .bind(exit_code)
    .bind(outcome)
    .bind(id)
    .bind(stage.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn stages(pool: &SqlitePool, id: DeploymentId) -> sqlx::Result<Vec<StageRow>> {
    sqlx::query_as(
        "SELECT name, started_at, finished_at, exit_code, outcome FROM stages \
         WHERE deployment_id = ? ORDER BY started_at, rowid",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Log lines of a deployment with `seq` greater than `after`, in order.
pub async fn log_lines(
    pool: &SqlitePool,
    id: DeploymentId,
    after: i64,
) -> sqlx::Result<Vec<LogLine>> {
    sqlx::query_as(
        "SELECT seq, stream, line, at FROM log_lines WHERE deployment_id = ? AND seq > ? ORDER BY seq",
    )
    .bind(id)
    .bind(after)
    .fetch_all(pool)
    .await
}

pub async fn set_stage_pgid(
    pool: &SqlitePool,
    id: DeploymentId,
    stage: Stage,
    pgid: i32,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE stages SET pgid = ? WHERE deployment_id = ? AND name = ?")
        .bind(pgid)
        .bind(id)
        .bind(stage.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Process groups of stages of `id` that never finished.
pub async fn unfinished_stage_pgids(pool: &SqlitePool, id: DeploymentId) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar(
        "SELECT pgid FROM stages WHERE deployment_id = ? AND finished_at IS NULL AND pgid IS NOT NULL",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Closes stage `stage` of `id` as failed (e.g. a restart whose release never came up).
pub async fn fail_open_stage(
    pool: &SqlitePool,
    id: DeploymentId,
    stage: Stage,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stages SET finished_at = ?, outcome = 'failed' \
         WHERE deployment_id = ? AND name = ? AND finished_at IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .bind(stage.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// One entry of the status history.
#[derive(Clone, Debug, Serialize, FromRow)]
pub struct StatusChange {
    pub id: i64,
    pub deployment_id: DeploymentId,
    pub status: String,
    pub at: i64,
}

/// Status changes after `after`, oldest first (at most `limit`).
pub async fn status_changes(
    pool: &SqlitePool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<StatusChange>> {
    sqlx::query_as(
        "SELECT id, deployment_id, status, at FROM status_changes WHERE id > ? ORDER BY id LIMIT ?",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest status change id (0 when there is none).
pub async fn last_status_change(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM status_changes")
        .fetch_one(pool)
        .await
}
