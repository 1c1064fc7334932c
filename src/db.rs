//! Storage: one SQLite file holding the app's tables (migrations in `migrations/`, bookkept
//! in `_app_migrations`) beside apalis's queue tables (bookkept in `_sqlx_migrations`).
//! Every transition of a deployment is one statement guarded by its old status.

use anyhow::Context;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};
use std::path::Path;
use std::time::Duration;

use crate::status::Status;

mod progress;
pub use progress::*;

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "selfdeploy.db";
/// How long a connection waits for a lock held by another writer, in milliseconds.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Pooled connections; SQLite has one writer anyway, a few readers serve the dashboard.
pub const MAX_CONNECTIONS: u32 = 8;
/// Migration bookkeeping table of the app's own migrations (apalis owns `_sqlx_migrations`).
pub const APP_MIGRATIONS_TABLE: &str = "_app_migrations";

/// A deployment id (the `deployments.id` primary key).
pub type DeploymentId = i64;

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens (creating if missing) the database and applies both sets of migrations.
pub async fn open(data_dir: &Path) -> anyhow::Result<SqlitePool> {
    let pool = connect(data_dir, false).await?;
    apalis_sqlite::SqliteStorage::migrations()
        .run(&pool)
        .await
        .context("applying the queue's migrations")?;
    app_migrator()
        .run(&pool)
        .await
        .context("applying the app's migrations")?;
    Ok(pool)
}

/// Connects with the pragmas every pooled connection needs; `read_only` for health checks
/// of a new release, which must not change the database.
pub async fn connect(data_dir: &Path, read_only: bool) -> anyhow::Result<SqlitePool> {
    let path = data_dir.join(DB_FILE_NAME);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(!read_only)
        .read_only(read_only)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .with_context(|| format!("opening the database {}", path.display()))
}

/// The app's migrations, bookkept apart from apalis's (they clash in one table).
pub fn app_migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(APP_MIGRATIONS_TABLE);
    migrator
}

/// One row of `deployments`.
#[derive(Clone, Debug, Serialize, FromRow)]
pub struct Deployment {
    pub id: DeploymentId,
    #[serde(skip)]
    pub delivery_id: String,
    #[serde(skip)]
    pub job_id: String,
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub branch: String,
    pub sha: String,
    pub message: String,
    pub author: String,
    pub pusher: String,
    #[sqlx(try_from = "String")]
    pub status: StatusColumn,
    pub stage: Option<String>,
    pub reason: Option<String>,
    pub release: Option<String>,
    pub received_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub log_lines_cut: i64,
}

/// `Status` as read from its TEXT column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StatusColumn(pub Status);

impl TryFrom<String> for StatusColumn {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse().map(StatusColumn)
    }
}

impl Deployment {
    pub fn status(&self) -> Status {
        self.status.0
    }

    pub fn short_sha(&self) -> &str {
        &self.sha[..self.sha.len().min(7)]
    }

    /// First line of the commit message.
    pub fn title(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }

    /// Milliseconds from start to finish (or to now while running).
    pub fn duration_ms(&self) -> Option<i64> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or_else(now_ms) - start)
    }
}

/// What the webhook records for an accepted push.
#[derive(Clone, Debug)]
pub struct NewDeployment {
    pub delivery_id: String,
    pub job_id: String,
    pub repository: String,
    pub git_ref: String,
    pub branch: String,
    pub sha: String,
    pub message: String,
    pub author: String,
    pub pusher: String,
}

/// `SELECT <every deployment column> FROM deployments ` followed by the rest of a query,
/// as one static string (sqlx refuses SQL built at run time).
macro_rules! select_deployment {
    ($rest:literal) => {
        concat!(
            "SELECT id, delivery_id, job_id, repository, git_ref, branch, sha, message, author, \
             pusher, status, stage, reason, release, received_at, started_at, finished_at, \
             log_lines_cut FROM deployments ",
            $rest
        )
    };
}

pub async fn insert_deployment(
    conn: &mut sqlx::SqliteConnection,
    new: &NewDeployment,
) -> sqlx::Result<DeploymentId> {
    let row: (i64,) = sqlx::query_as(
        "INSERT INTO deployments (delivery_id, job_id, repository, git_ref, branch, sha, message, \
         author, pusher, status, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?) \
         RETURNING id",
    )
    .bind(&new.delivery_id)
    .bind(&new.job_id)
    .bind(&new.repository)
    .bind(&new.git_ref)
    .bind(&new.branch)
    .bind(&new.sha)
    .bind(&new.message)
    .bind(&new.author)
    .bind(&new.pusher)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.0)
}

pub async fn find_by_delivery(
    conn: &mut sqlx::SqliteConnection,
    delivery_id: &str,
) -> sqlx::Result<Option<Deployment>> {
    sqlx::query_as(select_deployment!("WHERE delivery_id = ?"))
        .bind(delivery_id)
        .fetch_optional(&mut *conn)
        .await
}

/// The deployment of `sha` on `branch` that is queued, running or serving, if any.
pub async fn find_live_sha(
    conn: &mut sqlx::SqliteConnection,
    branch: &str,
    sha: &str,
) -> sqlx::Result<Option<Deployment>> {
    sqlx::query_as(select_deployment!(
        "WHERE branch = ? AND sha = ? \
         AND status IN ('queued', 'running', 'deployed') ORDER BY id DESC LIMIT 1"
    ))
    .bind(branch)
    .bind(sha)
    .fetch_optional(&mut *conn)
    .await
}

pub async fn get(pool: &SqlitePool, id: DeploymentId) -> sqlx::Result<Option<Deployment>> {
    sqlx::query_as(select_deployment!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One page of deployments, newest first.
pub async fn list(pool: &SqlitePool, limit: i64, offset: i64) -> sqlx::Result<Vec<Deployment>> {
    sqlx::query_as(select_deployment!("ORDER BY id DESC LIMIT ? OFFSET ?"))
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await
}

pub async fn count(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM deployments")
        .fetch_one(pool)
        .await
}

pub async fn with_status(pool: &SqlitePool, status: Status) -> sqlx::Result<Vec<Deployment>> {
    sqlx::query_as(select_deployment!("WHERE status = ? ORDER BY id"))
        .bind(status.as_str())
        .fetch_all(pool)
        .await
}

/// The deployment serving now, if any.
pub async fn serving(pool: &SqlitePool) -> sqlx::Result<Option<Deployment>> {
    sqlx::query_as(select_deployment!(
        "WHERE status = 'deployed' ORDER BY id DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await
}

/// How many deployments are queued or running.
pub async fn pending_count(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE status IN ('queued', 'running')")
        .fetch_one(pool)
        .await
}

/// The newest deployment id for `branch`.
pub async fn newest_on_branch(
    pool: &SqlitePool,
    branch: &str,
) -> sqlx::Result<Option<DeploymentId>> {
    sqlx::query_scalar("SELECT MAX(id) FROM deployments WHERE branch = ?")
        .bind(branch)
        .fetch_one(pool)
        .await
}

/// Whether a queued deployment newer than `id` exists on `branch`.
pub async fn newer_queued(pool: &SqlitePool, branch: &str, id: DeploymentId) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deployments WHERE branch = ? AND id > ? AND status = 'queued')",
    )
    .bind(branch)
    .bind(id)
    .fetch_one(pool)
    .await
}

/// Moves `id` from `from` to `to`, recording `reason`; false when it was not in `from`.
/// Entering `running` sets the start time, entering a final state the finish time.
pub async fn transition(
    pool: &SqlitePool,
    id: DeploymentId,
    from: Status,
    to: Status,
    reason: Option<&str>,
) -> sqlx::Result<bool> {
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE deployments SET status = ?, reason = COALESCE(?, reason), \
         started_at = CASE WHEN ? = 'running' THEN ? ELSE started_at END, \
         finished_at = CASE WHEN ? IN ('running', 'queued') THEN finished_at \
                            ELSE COALESCE(finished_at, ?) END \
         WHERE id = ? AND status = ?",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(to.as_str())
    .bind(now)
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn set_release(pool: &SqlitePool, id: DeploymentId, release: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE deployments SET release = ? WHERE id = ?")
        .bind(release)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Queued deployments on `branch` older than `id`.
pub async fn older_queued(
    pool: &SqlitePool,
    branch: &str,
    id: DeploymentId,
) -> sqlx::Result<Vec<DeploymentId>> {
    sqlx::query_scalar(
        "SELECT id FROM deployments WHERE branch = ? AND id < ? AND status = 'queued' ORDER BY id",
    )
    .bind(branch)
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Releases that must stay on disk: the serving one and the newest one before it.
pub async fn protected_releases(pool: &SqlitePool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT release FROM deployments WHERE release IS NOT NULL \
         AND status IN ('deployed', 'success') ORDER BY id DESC LIMIT 2",
    )
    .fetch_all(pool)
    .await
}

/// Makes `id` (now `from`) the serving deployment and the previous serving one `success`,
/// in one transaction. Returns the previous one's id, or `None` if `id` was not in `from`.
pub async fn mark_deployed(
    pool: &SqlitePool,
    id: DeploymentId,
    from: Status,
) -> sqlx::Result<Option<Option<DeploymentId>>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let previous: Option<DeploymentId> =
        sqlx::query_scalar("SELECT id FROM deployments WHERE status = 'deployed' AND id != ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let now = now_ms();
    let moved = sqlx::query(
        "UPDATE deployments SET status = 'deployed', finished_at = COALESCE(finished_at, ?) \
         WHERE id = ? AND status = ?",
    )
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved != 1 {
        return Ok(None);
    }
    sqlx::query("UPDATE deployments SET status = 'success' WHERE status = 'deployed' AND id != ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(previous))
}

/// The commit a release was built from.
pub async fn release_commit(pool: &SqlitePool, release: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT sha FROM deployments WHERE release = ? ORDER BY id DESC LIMIT 1")
        .bind(release)
        .fetch_optional(pool)
        .await
}
