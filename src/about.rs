//! What is running: `/version` (commit, release, start time, PID) and `/test`, whose text
//! is a constant in the source so that changing it needs a new release (the demo's probe).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;

/// The text `/test` answers with. The demo and the end-to-end test change it and push.
pub const TEST_TEXT: &str = "hello from selfdeploy";

/// The commit this binary was built from (see build.rs).
pub const BUILD_COMMIT: &str = env!("SELFDEPLOY_BUILD_COMMIT");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        .route("/test", get(|| async { TEST_TEXT }))
}

async fn version(State(state): State<AppState>) -> Json<serde_json::Value> {
    let release = state.release.clone();
    // A release knows its commit from the deployment that built it.
    let commit = match &release {
        Some(name) => crate::db::release_commit(&state.db, name)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| BUILD_COMMIT.to_string()),
        None => BUILD_COMMIT.to_string(),
    };
    Json(json!({
        "commit": commit,
        "release": release,
        "started_at": state.started_at,
        "pid": std::process::id(),
    }))
}
