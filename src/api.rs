//! The JSON API for scripts and tests, and `/healthz`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

use crate::app::AppState;
use crate::db::{self, DeploymentId};

/// Deployments per page when the client does not say.
pub const DEFAULT_PER_PAGE: i64 = 50;
/// Most deployments one page may hold.
pub const MAX_PER_PAGE: i64 = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/deployments", get(list))
        .route("/api/deployments/{id}", get(show))
        .route("/api/deployments/{id}/log", get(log))
        .route("/api/queue", get(queue))
        .route("/api/events", get(events))
}

/// Errors of read-only endpoints.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("too many event streams are open; try again later")]
    Busy,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(cause) => {
                tracing::error!("request failed: {cause:#}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// `?page=N&per_page=M`, both from 1.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

impl Pagination {
    /// (limit, offset), checked.
    pub fn limit_offset(&self) -> Result<(i64, i64, i64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page < 1 {
            return Err(ApiError::BadRequest("page must be at least 1".into()));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::BadRequest(format!(
                "per_page must be between 1 and {MAX_PER_PAGE}"
            )));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| ApiError::BadRequest("page is too large".into()))?;
        Ok((page, per_page, offset))
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let db_ok = sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(&state.db)
        .await
        .is_ok();
    let worker_ok = !state.worker_down.load(Ordering::Relaxed);
    let status = if db_ok && worker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ok" } else { "degraded" },
            "database": db_ok,
            "worker": worker_ok,
        })),
    )
        .into_response()
}

async fn list(
    State(state): State<AppState>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (page, per_page, offset) = pagination.limit_offset()?;
    let deployments = db::list(&state.db, per_page, offset).await?;
    let total = db::count(&state.db).await?;
    Ok(Json(json!({
        "deployments": deployments,
        "page": page,
        "per_page": per_page,
        "total": total,
    })))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deployment = db::get(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let stages = db::stages(&state.db, id).await?;
    let mut value = serde_json::to_value(&deployment).map_err(anyhow::Error::from)?;
    value["stages"] = serde_json::to_value(stages).map_err(anyhow::Error::from)?;
    Ok(Json(value))
}

/// `?after=SEQ`: only lines after that sequence number.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    pub after: Option<i64>,
}

async fn log(
    State(state): State<AppState>,
    Path(id): Path<DeploymentId>,
    Query(query): Query<LogQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deployment = db::get(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let lines = db::log_lines(&state.db, id, query.after.unwrap_or(0)).await?;
    Ok(Json(json!({
        "deployment_id": id,
        "lines": lines,
        "lines_cut": deployment.log_lines_cut,
    })))
}

async fn queue(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let pending = db::pending_count(&state.db).await?;
    Ok(Json(json!({
        "pending": pending,
        "worker": !state.worker_down.load(Ordering::Relaxed),
    })))
}

/// `?after=ID`: replay status changes after that id (the `Last-Event-ID` header wins).
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub after: Option<i64>,
}

/// Status changes fetched from the history per query.
const HISTORY_BATCH: i64 = 500;

/// `GET /api/events`: every status change as JSON, in order, each with its history id as
/// the SSE id, so a client that reconnects with `Last-Event-ID` misses none and sees none
/// twice, across server restarts too.
async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use axum::response::sse::Event as SseEvent;

    let slot = crate::dashboard::stream::StreamSlot::acquire(
        &state.event_streams,
        state.config.max_event_streams,
    )
    .ok_or(ApiError::Busy)?;
    let resume = crate::events::last_event_id(&headers)
        .map_err(|reason| ApiError::BadRequest(reason.into()))?;
    // Subscribe before reading, so nothing committed in between is missed.
    let rx = state.events.subscribe();
    let after = match resume.or(query.after) {
        Some(after) => after,
        None => db::last_status_change(&state.db).await?,
    };
    let shutdown = state.shutdown.clone();
    let feed = HistoryFeed {
        state,
        rx,
        last: after,
        buffer: std::collections::VecDeque::new(),
        dirty: true,
        _slot: slot,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let change = feed.next_change().await?;
        let event = SseEvent::default()
            .id(change.id.to_string())
            .json_data(&change)
            .expect("a status change serialises");
        Some((event, feed))
    });
    Ok(crate::dashboard::stream::sse_response(&shutdown, stream))
}

/// The status history after `last`, then each new change as it commits.
struct HistoryFeed {
    state: AppState,
    rx: tokio::sync::broadcast::Receiver<crate::events::Event>,
    last: i64,
    buffer: std::collections::VecDeque<db::StatusChange>,
    /// Whether the table may hold changes not read yet.
    dirty: bool,
    _slot: crate::dashboard::stream::StreamSlot,
}

impl HistoryFeed {
    async fn next_change(&mut self) -> Option<db::StatusChange> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(change) = self.buffer.pop_front() {
                self.last = change.id;
                return Some(change);
            }
            if self.dirty {
                match db::status_changes(&self.state.db, self.last, HISTORY_BATCH).await {
                    Ok(changes) if !changes.is_empty() => {
                        self.buffer.extend(changes);
                        continue;
                    }
                    Ok(_) => self.dirty = false,
                    Err(e) => {
                        tracing::warn!("event stream cannot read the history: {e}");
                        return None;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(crate::events::Event::Deployment(_)) | Err(RecvError::Lagged(_)) => {
                    self.dirty = true
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
