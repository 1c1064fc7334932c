//! The `restart` stage and what surrounds it: how an installed release becomes the serving
//! one (`exec`: health-check it, hand the listening socket over and become it; `command`:
//! run the user's command; `none`: install only), the check mode a candidate release runs
//! in, and the start-up reconciliation that settles what a stop or a switch left behind.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::app::AppState;
use crate::config::RestartStrategy;
use crate::db::{self, DeploymentId};
use crate::pipeline::{Run, StageError};
use crate::process::{CommandLine, EnvPolicy};
use crate::release;
use crate::status::{Stage, Status};

/// File in the data directory naming the deployment whose release is taking over.
pub const HANDOVER_FILE: &str = "handover.json";
/// Environment variable that tells an exec'd process which release it is.
pub const RELEASE_ENV: &str = "SELFDEPLOY_RELEASE";
/// The flag that runs a release in check mode.
pub const CHECK_FLAG: &str = "--check";
/// The fd an inherited listening socket arrives on (the systemd convention).
const LISTEN_FD: i32 = 3;

/// Written before the switch; read by the next process to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Handover {
    pub deployment_id: DeploymentId,
    pub release: String,
    pub executable: PathBuf,
}

/// What the server does when it stops.
#[derive(Debug)]
pub enum Exit {
    /// Stopped for good.
    Stopped,
    /// Become `executable`, handing it the listening socket `listener`.
    Exec {
        executable: PathBuf,
        release: String,
        listener: OwnedFd,
    },
}

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
            // If the command restarts this very server (`systemctl restart --no-block
            // selfdeploy`), the process that comes up next finishes the deployment.
            write_handover(run, executable)?;
            let cmd = CommandLine::from_config(&line);
            let cwd = state.config.data_dir.clone();
            let outcome = run.command_status(&cmd, &cwd, true, EnvPolicy::Build).await;
            remove_handover(&state.config.data_dir);
            if let Err((code, described)) = outcome? {
                return Err(StageError {
                    message: format!("restart command failed: {described}"),
                    exit_code: code,
                });
            }
            run.end(Some(0)).await?;
            let previous = db::mark_deployed(&state.db, id, Status::Running)
                .await
                .map_err(anyhow::Error::from)?;
            publish_pair(state, id, previous).await;
            Ok(())
        }
        RestartStrategy::Exec => {
            check_candidate(run, executable).await?;
            let release = write_handover(run, executable)?;
            run.note("health check passed; handing the socket to the new release")
                .await;
            // The stage stays open: the new process closes it once it serves.
            run.leave_stage_open();
            state.request_exec(executable.to_path_buf(), release);
            Ok(())
        }
    }
}

/// Records which deployment's release is taking over; returns the release name.
fn write_handover(run: &Run<'_>, executable: &Path) -> Result<String, StageError> {
    let release = run
        .deployment
        .release
        .clone()
        .unwrap_or_else(|| release::release_name(run.id(), &run.deployment.sha));
    let handover = Handover {
        deployment_id: run.id(),
        release: release.clone(),
        executable: executable.to_path_buf(),
    };
    let path = run.state.config.data_dir.join(HANDOVER_FILE);
    let json = serde_json::to_vec(&handover).map_err(anyhow::Error::from)?;
    release::write_atomic(&path, &json)?;
    Ok(release)
}

/// Runs the candidate in check mode with this server's settings, within the deadline.
async fn check_candidate(run: &mut Run<'_>, executable: &Path) -> Result<(), StageError> {
    let state = run.state;
    let mut args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.push(CHECK_FLAG.to_string());
    let cmd = CommandLine {
        program: executable.to_string_lossy().into_owned(),
        args,
    };
    let cwd = std::env::current_dir().context("the working directory")?;
    let limit = state.config.health_timeout;
    run.note(&format!(
        "checking the new release (deadline {} s)",
        limit.as_secs()
    ))
    .await;
    match tokio::time::timeout(
        limit,
        run.command_status(&cmd, &cwd, false, EnvPolicy::Server),
    )
    .await
    {
        Err(_) => Err(StageError::new(format!(
            "the new release did not pass its health check within {} s",
            limit.as_secs()
        ))),
        Ok(result) => result?.map_err(|(code, described)| StageError {
            message: format!("the new release failed its health check: {described}"),
            exit_code: code,
        }),
    }
}

async fn publish_pair(state: &AppState, id: DeploymentId, previous: Option<Option<DeploymentId>>) {
    state.publish_deployment(id).await;
    if let Some(Some(previous)) = previous {
        state.publish_deployment(previous).await;
    }
}

/// Check mode: what a candidate release runs before the switch. It reads the settings,
/// opens the database without changing it, confirms the migrations are compatible,
/// serves the real router on an ephemeral port and asks it for `/healthz` and `/`.
pub async fn check_mode(config: crate::Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.data_dir, true).await?;
    check_migrations(&pool, &db::app_migrator(), db::APP_MIGRATIONS_TABLE).await?;
    check_migrations(
        &pool,
        &apalis_sqlite::SqliteStorage::migrations(),
        "_sqlx_migrations",
    )
    .await?;
    println!("migrations: compatible");
    let secret = crate::secret::load_existing(&config.secret)?;
    let state = AppState::new(config, pool, secret);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    let router = crate::app::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    println!("check server on http://{host}");
    let auth = state.config.dashboard_password.as_ref().map(|p| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("selfdeploy:{p}"))
        )
    });
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    for path in ["/healthz", "/"] {
        let (status, body) = crate::probe::get(&host, path, &headers).await?;
        if status != 200 {
            bail!(
                "GET {path} answered {status}: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        println!("GET {path}: 200");
    }
    println!("check passed");
    Ok(())
}

/// Fails if the database has a migration this binary does not know, or knows differently.
async fn check_migrations(
    pool: &sqlx::SqlitePool,
    migrator: &sqlx::migrate::Migrator,
    table: &str,
) -> anyhow::Result<()> {
    let sql = format!("SELECT version, checksum FROM {table} WHERE success = 1");
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading {table}"))?;
    for (version, checksum) in applied {
        match migrator.iter().find(|m| m.version == version) {
            None => bail!("the database has migration {version}, which this release does not know"),
            Some(m) if *m.checksum != *checksum => {
                bail!("migration {version} differs between the database and this release")
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Replaces this process with `executable`, handing it `listener` on fd 3. Returns only
/// on failure.
pub fn exec_into(executable: &Path, release: &str, listener: OwnedFd) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // SAFETY: plain fd operations on descriptors this process owns; nothing else runs now.
    unsafe {
        if fd == LISTEN_FD {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(fd, LISTEN_FD) < 0 {
            return std::io::Error::last_os_error().into();
        }
    }
    std::mem::forget(listener);
    let error = std::process::Command::new(executable)
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env(RELEASE_ENV, release)
        .exec();
    anyhow::Error::new(error).context(format!("cannot exec {}", executable.display()))
}

/// The release this process runs: told by the hand-over, else where its executable lies.
pub fn own_release(data_dir: &Path) -> Option<String> {
    if let Ok(name) = std::env::var(RELEASE_ENV)
        && !name.is_empty()
    {
        return Some(name);
    }
    let exe = std::env::current_exe().ok()?;
    release::release_of(data_dir, &exe)
}

fn read_handover(data_dir: &Path) -> Option<Handover> {
    let text = std::fs::read(data_dir.join(HANDOVER_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn remove_handover(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(HANDOVER_FILE));
}

/// Settles, before the worker starts, every deployment a previous process left `running`.
/// Returns the deployment this process was exec'd to serve, which it marks `deployed`
/// once it is serving ([`complete_handover`]); every other one is `failed`: interrupted
/// (and queued again if it is still the newest push for its branch), or "the new release
/// did not come up" when the switch to it was made but this process is not it.
pub async fn reconcile(state: &AppState) -> anyhow::Result<Option<Handover>> {
    let data_dir = &state.config.data_dir;
    let handover = read_handover(data_dir);
    let own = state.release.clone();
    let mut taking_over = None;
    for deployment in db::with_status(&state.db, Status::Running).await? {
        let id = deployment.id;
        if let Some(h) = handover.as_ref().filter(|h| h.deployment_id == id) {
            if own.as_deref() == Some(h.release.as_str()) {
                taking_over = Some(h.clone());
                continue;
            }
            db::fail_open_stage(&state.db, id, Stage::Restart).await?;
            let reason = format!(
                "the new release did not come up; still serving {}",
                own.as_deref().unwrap_or("the previous build")
            );
            if db::transition(
                &state.db,
                id,
                Status::Running,
                Status::Failed,
                Some(&reason),
            )
            .await?
            {
                tracing::error!(deployment = id, "{reason}");
                state.publish_deployment(id).await;
            }
            continue;
        }
        for pgid in db::unfinished_stage_pgids(&state.db, id).await? {
            if crate::process::kill_orphaned_group(pgid, data_dir) {
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
    if taking_over.is_none() {
        remove_handover(data_dir);
    }
    Ok(taking_over)
}

/// Called once this process serves: its deployment becomes `deployed`, the previous one
/// `success`, and `current` points at this release.
pub async fn complete_handover(state: &AppState, handover: &Handover) -> anyhow::Result<()> {
    let id = handover.deployment_id;
    release::set_current(&state.config.data_dir, &handover.executable)?;
    db::finish_stage(&state.db, id, Stage::Restart, Some(0), "ok").await?;
    let previous = db::mark_deployed(&state.db, id, Status::Running).await?;
    remove_handover(&state.config.data_dir);
    publish_pair(state, id, previous).await;
    tracing::info!(deployment = id, release = %handover.release, "serving the new release");
    Ok(())
}

/// Queues the push of `deployment` again, as a new deployment with its own job.
async fn requeue(state: &AppState, deployment: &db::Deployment) -> anyhow::Result<DeploymentId> {
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
