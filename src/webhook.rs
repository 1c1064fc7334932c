//! `POST /webhooks/github` (and `/pushevent`, the original system's path): verify the
//! signature over the raw body, decide whether the push deploys, and record the deployment
//! and its job in one transaction. Nothing of the pipeline runs inside the request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::app::AppState;
use crate::db::{self, NewDeployment};
use crate::queue;
use crate::secret::WebhookSecret;

/// GitHub caps webhook payloads at 25 MB; a larger body is refused without buffering it.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
/// Longest `X-GitHub-Delivery` accepted, in bytes (GitHub sends a 36-character GUID).
pub const MAX_DELIVERY_ID_BYTES: usize = 100;

/// Why a delivery was refused. Client-facing text never carries internal causes.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "missing X-Hub-Signature-256 header (set a secret on the webhook; SHA-1 signatures are not accepted)"
    )]
    MissingSignature,
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)")]
    MalformedSignature,
    #[error("signature does not match the body")]
    BadSignature,
    #[error("payload larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("could not read the request body")]
    BadBody,
    #[error(
        "unsupported content type {0:?} (use application/json or application/x-www-form-urlencoded)"
    )]
    UnsupportedContentType(String),
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
    #[error("invalid payload: {0}")]
    BadPayload(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::MissingSignature
            | WebhookError::MalformedSignature
            | WebhookError::BadSignature => StatusCode::UNAUTHORIZED,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::UnsupportedContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::BadBody | WebhookError::BadHeader(_) | WebhookError::BadPayload(_) => {
                StatusCode::BAD_REQUEST
            }
            WebhookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            WebhookError::Internal(cause) => tracing::error!("webhook failed: {cause:#}"),
            WebhookError::MissingSignature
            | WebhookError::MalformedSignature
            | WebhookError::BadSignature => tracing::warn!("webhook refused: {self}"),
            _ => tracing::info!("webhook refused: {self}"),
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        WebhookError::Internal(anyhow::Error::new(e).context("database"))
    }
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`) over the exact raw body, in constant time.
pub fn verify_signature(
    secret: &WebhookSecret,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let sig = hex::decode(hex_sig).map_err(|_| WebhookError::MalformedSignature)?;
    if sig.len() != 32 {
        return Err(WebhookError::MalformedSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)
}

/// The `X-Hub-Signature-256` value for `body`, for tests and `just push`.
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The fields of a push event that a deployment needs.
#[derive(Debug, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub after: String,
    #[serde(default)]
    pub deleted: bool,
    pub head_commit: Option<HeadCommit>,
    pub pusher: Pusher,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub struct HeadCommit {
    pub id: String,
    pub message: String,
    pub author: Person,
}

#[derive(Debug, Deserialize)]
pub struct Person {
    pub name: String,
    pub username: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Pusher {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
struct PingEvent {
    #[serde(default)]
    zen: String,
}

#[derive(Deserialize)]
struct FormPayload {
    payload: String,
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Whether `s` is a full commit SHA: 40 lowercase hex digits.
pub fn is_full_sha(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON document of the delivery, by content type.
fn payload_json(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, WebhookError> {
    let content_type = header(headers, "content-type").unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json_bytes = match mime.as_str() {
        "application/json" => body.to_vec(),
        "application/x-www-form-urlencoded" => {
            let form: FormPayload = serde_urlencoded::from_bytes(body).map_err(|e| {
                WebhookError::BadPayload(format!("form body needs a `payload` field: {e}"))
            })?;
            form.payload.into_bytes()
        }
        _ => {
            return Err(WebhookError::UnsupportedContentType(
                content_type.to_string(),
            ));
        }
    };
    serde_json::from_slice(&json_bytes)
        .map_err(|e| WebhookError::BadPayload(format!("malformed JSON: {e}")))
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, WebhookError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebhookError::TooLarge
        } else {
            WebhookError::BadBody
        }
    })?;
    verify_signature(
        &state.secret,
        header(&headers, "x-hub-signature-256"),
        &body,
    )?;
    let document = payload_json(&headers, &body)?;
    let event =
        header(&headers, "x-github-event").ok_or(WebhookError::BadHeader("X-GitHub-Event"))?;
    match event {
        "ping" => {
            let ping: PingEvent = serde_json::from_value(document)
                .map_err(|e| WebhookError::BadPayload(e.to_string()))?;
            Ok((StatusCode::OK, Json(json!({ "zen": ping.zen }))).into_response())
        }
        "push" => {
            let delivery = header(&headers, "x-github-delivery")
                .filter(|d| !d.is_empty() && d.len() <= MAX_DELIVERY_ID_BYTES)
                .ok_or(WebhookError::BadHeader("X-GitHub-Delivery"))?;
            let push: PushEvent = serde_json::from_value(document)
                .map_err(|e| WebhookError::BadPayload(format!("push event: {e}")))?;
            accept_push(&state, delivery, push).await
        }
        other => Ok(ignored(format!(
            "event {other:?} is not deployed; only push is"
        ))),
    }
}

fn ignored(reason: String) -> Response {
    tracing::info!("webhook ignored: {reason}");
    (StatusCode::ACCEPTED, Json(json!({ "ignored": reason }))).into_response()
}

async fn accept_push(
    state: &AppState,
    delivery: &str,
    push: PushEvent,
) -> Result<Response, WebhookError> {
    let config = &state.config;
    if let Some(expected) = &config.github_repository
        && !push.repository.full_name.eq_ignore_ascii_case(expected)
    {
        return Ok(ignored(format!(
            "push for repository {:?}, this server deploys {expected:?}",
            push.repository.full_name
        )));
    }
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!("{:?} is not a branch", push.git_ref)));
    };
    if branch != config.branch {
        return Ok(ignored(format!(
            "push to branch {branch:?}, this server deploys {:?}",
            config.branch
        )));
    }
    if push.deleted || push.after == ZERO_SHA {
        return Ok(ignored(format!("branch {branch:?} was deleted")));
    }
    if !is_full_sha(&push.after) {
        return Err(WebhookError::BadPayload(
            "`after` is not a 40-digit commit SHA".into(),
        ));
    }
    let head = push
        .head_commit
        .ok_or_else(|| WebhookError::BadPayload("push has no head_commit".into()))?;
    if head.id != push.after {
        return Err(WebhookError::BadPayload(
            "head_commit.id differs from `after`".into(),
        ));
    }
    let new = NewDeployment {
        delivery_id: delivery.to_string(),
        job_id: ulid::Ulid::generate().to_string(),
        repository: push.repository.full_name,
        git_ref: push.git_ref.clone(),
        branch: branch.to_string(),
        sha: push.after,
        message: head.message,
        author: head.author.username.unwrap_or(head.author.name),
        pusher: push.pusher.name,
    };

    // IMMEDIATE: take the write lock first, so two deliveries cannot both pass the checks.
    let mut tx = state.db.begin_with("BEGIN IMMEDIATE").await?;
    if let Some(existing) = db::find_by_delivery(&mut tx, &new.delivery_id).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({ "duplicate": existing.id, "status": existing.status() })),
        )
            .into_response());
    }
    if let Some(existing) = db::find_live_sha(&mut tx, &new.branch, &new.sha).await? {
        let reason = format!(
            "commit {} is already {} as deployment {}",
            existing.short_sha(),
            existing.status(),
            existing.id
        );
        tracing::info!("webhook ignored: {reason}");
        return Ok((
            StatusCode::OK,
            Json(json!({
                "ignored": reason,
                "deployment_id": existing.id,
                "status": existing.status(),
            })),
        )
            .into_response());
    }
    let id = db::insert_deployment(&mut tx, &new).await?;
    queue::enqueue(&mut tx, id, &new.job_id).await?;
    tx.commit().await?;
    tracing::info!(deployment = id, sha = %new.sha, "push queued");
    state.publish_deployment(id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "deployment_id": id, "status": "queued" })),
    )
        .into_response())
}
