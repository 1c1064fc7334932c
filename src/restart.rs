//! The `restart` stage: how an installed release becomes the serving one, by strategy
//! (`exec`: hand the socket over and become it; `command`: run the user's command;
//! `none`: install only), and the start-up reconciliation that settles what a restart left.

use std::path::Path;

use crate::config::RestartStrategy;
use crate::db;
use crate::pipeline::{Run, StageError};
use crate::process::CommandLine;
use crate::release;
use crate::status::Status;

pub async fn go_live(run: &mut Run<'_>, executable: &Path) -> Result<(), StageError> {
    let state = run.state;
    let id = run.id();
    match state.config.restart {
        RestartStrategy::None => {
            run.note("restart strategy is none: installed, not started")
                .await;
            run.end(Some(0)).await?;
            if db::transition(
                &state.db,
                id,
                Status::Running,
                Status::Success,
                Some("installed; restart strategy is none"),
            )
            .await
            .map_err(anyhow::Error::from)?
            {
                state.publish_deployment(id).await;
            }
            Ok(())
        }
        RestartStrategy::Command => {
            let line = state.config.restart_command.clone().unwrap_or_default();
            release::set_current(&state.config.data_dir, executable)?;
            run.note(&format!("`current` now points at {}", executable.display()))
                .await;
            let cmd = CommandLine::from_config(&line);
            let cwd = state.config.data_dir.clone();
            if let Err((code, described)) = run.command_status(&cmd, &cwd, true).await? {
                return Err(StageError {
                    message: format!("restart command failed: {described}"),
                    exit_code: code,
                });
            }
            run.end(Some(0)).await?;
            mark_live(state, id).await?;
            Ok(())
        }
        RestartStrategy::Exec => {
            // Until the socket hand-over lands, exec behaves like `command` without one.
            release::set_current(&state.config.data_dir, executable)?;
            run.end(Some(0)).await?;
            mark_live(state, id).await?;
            Ok(())
        }
    }
}

async fn mark_live(state: &crate::app::AppState, id: db::DeploymentId) -> Result<(), StageError> {
    let previous = db::mark_deployed(&state.db, id, Status::Running)
        .await
        .map_err(anyhow::Error::from)?;
    state.publish_deployment(id).await;
    if let Some(Some(previous)) = previous {
        state.publish_deployment(previous).await;
    }
    Ok(())
}

/// Settles, before the worker starts, every deployment a previous process left `running`:
/// none stays `running`. One that was interrupted is `failed`, and queued again as a new
/// deployment if it is still the newest push for its branch.
pub async fn reconcile(state: &crate::app::AppState) -> anyhow::Result<()> {
    for deployment in db::with_status(&state.db, Status::Running).await? {
        let id = deployment.id;
        for pgid in db::unfinished_stage_pgids(&state.db, id).await? {
            if crate::process::kill_orphaned_group(pgid, &state.config.data_dir) {
                tracing::warn!(
                    deployment = id,
                    pgid,
                    "killed the interrupted stage's processes"
                );
            }
        }
        let moved = db::transition(
            &state.db,
            id,
            Status::Running,
            Status::Failed,
            Some("interrupted: the server stopped while this deployment ran"),
        )
        .await?;
        if !moved {
            continue;
        }
        tracing::warn!(
            deployment = id,
            "interrupted by a server stop; marked failed"
        );
        if db::newest_on_branch(&state.db, &deployment.branch).await? == Some(id) {
            let new_id = requeue(state, &deployment).await?;
            tracing::info!(
                deployment = id,
                again = new_id,
                "queued again as a new deployment"
            );
        }
    }
    Ok(())
}

/// Queues the push of `deployment` again, as a new deployment with its own job.
async fn requeue(
    state: &crate::app::AppState,
    deployment: &db::Deployment,
) -> anyhow::Result<db::DeploymentId> {
    let job_id = ulid::Ulid::generate().to_string();
    let new = db::NewDeployment {
        delivery_id: format!("{}/requeued-{job_id}", deployment.delivery_id),
        job_id: job_id.clone(),
        repository: deployment.repository.clone(),
        git_ref: deployment.git_ref.clone(),
        branch: deployment.branch.clone(),
        sha: deployment.sha.clone(),
        message: deployment.message.clone(),
        author: deployment.author.clone(),
        pusher: deployment.pusher.clone(),
    };
    let mut tx = state.db.begin_with("BEGIN IMMEDIATE").await?;
    let id = db::insert_deployment(&mut tx, &new).await?;
    crate::queue::enqueue(&mut tx, id, &job_id).await?;
    tx.commit().await?;
    state.publish_deployment(id).await;
    Ok(id)
}
