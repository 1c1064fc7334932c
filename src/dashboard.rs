//! The live dashboard: askama pages kept current by htmx out-of-band swaps over
//! server-sent events (see `stream`). No JavaScript of our own: the page loads the
//! vendored htmx 4.0.1 and its SSE extension, served from the binary.
//!
//! Routes: `GET /` (serving now + deployments table, `?page=N`), `GET /events`,
//! `GET /deployments/{id}`, `GET /deployments/{id}/events`, and `/static/…`. When a
//! dashboard password is set, everything but `/static/…` asks for HTTP Basic auth.

pub mod auth;
pub mod stream;
pub mod views;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use crate::app::AppState;
use crate::db::{self, DeploymentId};
pub use auth::DashboardAuth;
use views::{IndexData, Pager, Site};

/// Deployments per page of the table.
pub const PER_PAGE: i64 = 50;

/// The vendored htmx (0BSD, `static/htmx-LICENSE`), from the npm package `htmx.org@4.0.1`.
pub const HTMX_URL: &str = "/static/htmx-4.0.1.min.js";
/// htmx 4's SSE extension, from the same package (`dist/ext/hx-sse.min.js`).
pub const HX_SSE_URL: &str = "/static/hx-sse-4.0.1.min.js";

const HTMX_JS: &[u8] = include_bytes!("../static/htmx-4.0.1.min.js");
const HX_SSE_JS: &[u8] = include_bytes!("../static/hx-sse-4.0.1.min.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// `Cache-Control` of the versioned static files.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `/static/style-<first 12 hex digits of its SHA-256>.css`: a new URL whenever it changes.
pub fn style_url() -> &'static str {
    static URL: LazyLock<String> = LazyLock::new(|| {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(STYLE_CSS.as_bytes()));
        format!("/static/style-{}.css", &digest[..12])
    });
    &URL
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/events", get(index_events))
        .route("/deployments/{id}", get(show))
        .route("/deployments/{id}/events", get(show_events))
        .route(
            HTMX_URL,
            get(|| async { static_file(HTMX_JS, "text/javascript") }),
        )
        .route(
            HX_SSE_URL,
            get(|| async { static_file(HX_SSE_JS, "text/javascript") }),
        )
        .route(
            style_url(),
            get(|| async { static_file(STYLE_CSS.as_bytes(), "text/css; charset=utf-8") }),
        )
}

fn static_file(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        body,
    )
        .into_response()
}

fn site(state: &AppState) -> Site {
    Site {
        style_url: style_url().to_string(),
        branch: state.config.branch.clone(),
    }
}

/// Errors at the dashboard's HTTP edge; internal causes are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("too many open event streams")]
    TooManyStreams,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for DashError {
    fn from(e: sqlx::Error) -> Self {
        DashError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<askama::Error> for DashError {
    fn from(e: askama::Error) -> Self {
        DashError::Internal(anyhow::Error::new(e).context("rendering a template"))
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            DashError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such deployment or page.".to_string(),
            ),
            DashError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why.clone()),
            DashError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Password required",
                "This dashboard needs its password (any user name).".to_string(),
            ),
            DashError::TooManyStreams => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many live views",
                "Too many dashboards are open at once; this one will retry.".to_string(),
            ),
            DashError::Internal(cause) => {
                tracing::error!("dashboard request failed: {cause:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not show this page. Its log has the details.".to_string(),
                )
            }
        };
        let site = Site {
            style_url: style_url().to_string(),
            branch: String::new(),
        };
        let body = views::error_page(&site, status.as_u16(), title, &message)
            .unwrap_or_else(|_| title.to_string());
        let mut response = (status, Html(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            DashError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(auth::CHALLENGE),
                );
            }
            DashError::TooManyStreams => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// `?page=N`, from 1; read as text so a bad value gets our own 400 page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub page: Option<String>,
}

impl PageQuery {
    fn page(&self) -> Result<i64, DashError> {
        let Some(text) = &self.page else {
            return Ok(1);
        };
        match text.parse::<i64>() {
            Ok(page) if page >= 1 && page.checked_mul(PER_PAGE).is_some() => Ok(page),
            _ => Err(DashError::BadRequest(
                "The page number must be a whole number from 1.".into(),
            )),
        }
    }
}

fn parse_id(text: &str) -> Result<DeploymentId, DashError> {
    text.parse()
        .map_err(|_| DashError::BadRequest("Deployment ids are whole numbers.".into()))
}

fn no_store(html: String) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn index(
    _auth: DashboardAuth,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Response, DashError> {
    let page = query.page()?;
    let total = db::count(&state.db).await?;
    let rows = db::list(&state.db, PER_PAGE, (page - 1) * PER_PAGE).await?;
    let serving = db::serving(&state.db).await?;
    let data = IndexData {
        serving: serving.as_ref(),
        rows: &rows,
        pager: Pager {
            page,
            per_page: PER_PAGE,
            total,
        },
        worker_down: state.worker_down.load(Ordering::Relaxed),
    };
    Ok(no_store(views::index_page(&site(&state), &data)?))
}

async fn index_events(
    _auth: DashboardAuth,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Response, DashError> {
    let page = query.page()?;
    let site = site(&state);
    stream::index_events(state, site, page)
}

async fn show(
    _auth: DashboardAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let id = parse_id(&id)?;
    let deployment = db::get(&state.db, id).await?.ok_or(DashError::NotFound)?;
    let stages = db::stages(&state.db, id).await?;
    let lines = db::log_lines(&state.db, id, 0).await?;
    let html = views::deployment_page(&site(&state), &deployment, &stages, &lines)?;
    Ok(no_store(html))
}

async fn show_events(
    _auth: DashboardAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    let id = parse_id(&id)?;
    let resume_after = crate::events::last_event_id(&headers)
        .map_err(|reason| DashError::BadRequest(reason.into()))?;
    db::get(&state.db, id).await?.ok_or(DashError::NotFound)?;
    stream::deployment_events(state, id, resume_after)
}
