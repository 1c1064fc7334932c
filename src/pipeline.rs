//! The pipeline the worker runs for one deployment: take it (or supersede it), then
//! `fetch` the exact pushed commit, `build` it, `install` the executable as a release and
//! `restart` into it, within the time limit. Every outcome lands on the deployment's row.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tokio::time::Instant;

use crate::app::AppState;
use crate::config::RestartStrategy;
use crate::db::{self, Deployment, DeploymentId};
use crate::logs::{LogWriter, Redactor, Stream};
use crate::process::{self, CommandLine, EnvPolicy};
use crate::release;
use crate::restart;
use crate::status::{Stage, Status};
use crate::webhook::is_full_sha;

/// Directory of the build workspace (a clone, never the user's own checkout) in the data
/// directory. Its `target/` persists between deployments, so builds are incremental.
pub const WORKSPACE_DIR: &str = "workspace";

/// How a stage ended badly.
#[derive(Debug)]
pub struct StageError {
    pub message: String,
    pub exit_code: Option<i32>,
}

impl StageError {
    pub fn new(message: impl Into<String>) -> Self {
        StageError {
            message: message.into(),
            exit_code: None,
        }
    }
}

impl From<anyhow::Error> for StageError {
    fn from(e: anyhow::Error) -> Self {
        StageError::new(format!("{e:#}"))
    }
}

/// One deployment being carried out.
pub struct Run<'a> {
    pub state: &'a AppState,
    pub deployment: Deployment,
    pub log: LogWriter,
    stage: Option<Stage>,
}

/// Takes deployment `id` from the queue and carries it to its final status. Never panics
/// the worker: an internal error fails the deployment with that error.
pub async fn run(state: &AppState, id: DeploymentId) {
    if let Err(e) = take_and_run(state, id).await {
        tracing::error!(deployment = id, "pipeline error: {e:#}");
        let reason = format!("internal error: {e:#}");
        if let Ok(true) = db::transition(
            &state.db,
            id,
            Status::Running,
            Status::Failed,
            Some(&reason),
        )
        .await
        {
            state.publish_deployment(id).await;
        }
    }
}

async fn take_and_run(state: &AppState, id: DeploymentId) -> anyhow::Result<()> {
    let Some(deployment) = db::get(&state.db, id).await? else {
        tracing::warn!(deployment = id, "job for a deployment that does not exist");
        return Ok(());
    };
    if deployment.status() != Status::Queued {
        // A job apalis re-enqueued after a crash, for a deployment already settled.
        tracing::info!(deployment = id, status = %deployment.status(), "not queued; skipped");
        return Ok(());
    }
    if db::newer_queued(&state.db, &deployment.branch, id).await? {
        if db::transition(
            &state.db,
            id,
            Status::Queued,
            Status::Superseded,
            Some("a newer push was queued"),
        )
        .await?
        {
            tracing::info!(deployment = id, "superseded by a newer push");
            state.publish_deployment(id).await;
        }
        return Ok(());
    }
    if !db::transition(&state.db, id, Status::Queued, Status::Running, None).await? {
        return Ok(());
    }
    state.publish_deployment(id).await;
    // Jobs run oldest first, but after a crash apalis may hand them back in another order.
    for older in db::older_queued(&state.db, &deployment.branch, id).await? {
        if db::transition(
            &state.db,
            older,
            Status::Queued,
            Status::Superseded,
            Some("a newer push was queued"),
        )
        .await?
        {
            state.publish_deployment(older).await;
        }
    }

    let log = LogWriter::new(state.db.clone(), state.events.clone(), id, redactor(state));
    let mut run = Run {
        state,
        deployment: db::get(&state.db, id)
            .await?
            .context("deployment vanished")?,
        log,
        stage: None,
    };
    let deadline = Instant::now() + state.config.time_limit;
    let outcome = tokio::time::timeout_at(deadline, run.stages()).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => run.fail(error).await?,
        Err(_elapsed) => run.time_out().await?,
    }
    Ok(())
}

/// Masks the webhook secret and every build variable the settings mark secret.
fn redactor(state: &AppState) -> Redactor {
    let mut secrets = vec![state.secret.expose().to_string()];
    if let Some(password) = &state.config.dashboard_password {
        secrets.push(password.clone());
    }
    for name in &state.config.secret_env {
        if let Ok(value) = std::env::var(name) {
            secrets.push(value);
        }
    }
    Redactor::new(secrets)
}

impl Run<'_> {
    pub fn id(&self) -> DeploymentId {
        self.deployment.id
    }

    fn data_dir(&self) -> &Path {
        &self.state.config.data_dir
    }

    fn workspace(&self) -> PathBuf {
        self.data_dir().join(WORKSPACE_DIR)
    }

    async fn stages(&mut self) -> Result<(), StageError> {
        self.begin(Stage::Fetch).await?;
        self.fetch().await?;
        self.end(Some(0)).await?;

        self.begin(Stage::Build).await?;
        let build = CommandLine::from_config(&self.state.config.build_command);
        let workspace = self.workspace();
        self.command(&build, &workspace, "build command").await?;
        self.end(Some(0)).await?;

        self.begin(Stage::Install).await?;
        let executable = self.install().await?;
        self.end(Some(0)).await?;

        self.begin(Stage::Restart).await?;
        restart::go_live(self, &executable).await
    }

    /// Leaves the current stage open for another process to close (the `exec` switch).
    pub fn leave_stage_open(&mut self) {
        self.stage = None;
    }

    async fn begin(&mut self, stage: Stage) -> Result<(), StageError> {
        self.stage = Some(stage);
        db::start_stage(&self.state.db, self.id(), stage)
            .await
            .context("recording the stage")?;
        self.state.publish_deployment(self.id()).await;
        self.note(&format!("== {stage} ==")).await;
        Ok(())
    }

    /// Closes the current stage as `ok`.
    pub async fn end(&mut self, exit_code: Option<i32>) -> Result<(), StageError> {
        if let Some(stage) = self.stage.take() {
            db::finish_stage(&self.state.db, self.id(), stage, exit_code, "ok")
                .await
                .context("recording the stage")?;
            self.state.publish_deployment(self.id()).await;
        }
        Ok(())
    }

    /// A line of selfdeploy's own in the deployment's log.
    pub async fn note(&mut self, text: &str) {
        self.log.line(Stream::Selfdeploy, text).await;
    }

    /// Runs a command in the stage; a non-zero exit fails the stage.
    pub async fn command(
        &mut self,
        cmd: &CommandLine,
        cwd: &Path,
        what: &str,
    ) -> Result<(), StageError> {
        self.command_status(cmd, cwd, false, EnvPolicy::Build)
            .await?
            .map_err(|(code, described)| StageError {
                message: format!("{what} failed: {described}"),
                exit_code: code,
            })
    }

    /// Runs a command and reports a failed exit as `Err((code, description))`.
    pub async fn command_status(
        &mut self,
        cmd: &CommandLine,
        cwd: &Path,
        keep_group: bool,
        env: EnvPolicy,
    ) -> Result<Result<(), (Option<i32>, String)>, StageError> {
        let running = process::spawn(cmd, cwd, env)?;
        if let (Some(stage), Some(pgid)) = (self.stage, running.pgid()) {
            // Remembered so that a server killed mid-stage can stop the orphans next start.
            db::set_stage_pgid(&self.state.db, self.id(), stage, pgid)
                .await
                .context("recording the stage's process group")?;
        }
        let status = running.wait(&mut self.log, keep_group).await?;
        if status.success() {
            Ok(Ok(()))
        } else {
            Ok(Err((status.code(), process::describe(&status))))
        }
    }

    async fn fetch(&mut self) -> Result<(), StageError> {
        let sha = self.deployment.sha.clone();
        if !is_full_sha(&sha) {
            return Err(StageError::new(format!("{sha:?} is not a commit SHA")));
        }
        let repo = repo_location(&self.state.config.repo);
        let workspace = self.workspace();
        let data_dir = self.data_dir().to_path_buf();
        std::fs::create_dir_all(&data_dir).context("creating the data directory")?;
        if !workspace.join(".git").exists() {
            let ws = workspace.to_string_lossy().into_owned();
            self.command(
                &CommandLine::new("git", &["init", "--quiet", &ws]),
                &data_dir,
                "git init",
            )
            .await?;
        }
        let by_sha = CommandLine::new("git", &["fetch", "--no-tags", "--", &repo, &sha]);
        if self
            .command_status(&by_sha, &workspace, false, EnvPolicy::Build)
            .await?
            .is_err()
        {
            // Some servers refuse to fetch a bare SHA; fetch the branches and look for it.
            self.note("fetching by SHA was refused; fetching all branches")
                .await;
            let all = CommandLine::new(
                "git",
                &[
                    "fetch",
                    "--no-tags",
                    "--",
                    &repo,
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            );
            self.command(&all, &workspace, "git fetch").await?;
        }
        let object = format!("{sha}^{{commit}}");
        let exists = CommandLine::new("git", &["cat-file", "-e", &object]);
        if self
            .command_status(&exists, &workspace, false, EnvPolicy::Build)
            .await?
            .is_err()
        {
            return Err(StageError::new(format!(
                "commit {sha} cannot be fetched from the repository"
            )));
        }
        let checkout =
            CommandLine::new("git", &["checkout", "--quiet", "--force", "--detach", &sha]);
        self.command(&checkout, &workspace, "git checkout").await?;
        // Untracked files of an earlier build must not leak into this one; ignored ones
        // (the target directory) stay for incremental builds.
        let clean = CommandLine::new("git", &["clean", "-ffdq"]);
        self.command(&clean, &workspace, "git clean").await?;
        Ok(())
    }

    async fn install(&mut self) -> Result<PathBuf, StageError> {
        let name = release::release_name(self.id(), &self.deployment.sha);
        let artifact = self.workspace().join(&self.state.config.artifact);
        let data_dir = self.data_dir().to_path_buf();
        let install_name = name.clone();
        let executable = tokio::task::spawn_blocking(move || {
            release::install(&data_dir, &install_name, &artifact)
        })
        .await
        .context("install task")??;
        db::set_release(&self.state.db, self.id(), &name)
            .await
            .context("recording the release")?;
        self.note(&format!("installed release {name}")).await;
        let protect = db::protected_releases(&self.state.db)
            .await
            .context("listing the releases in use")?;
        let mut protect = protect;
        protect.push(name.clone());
        protect.extend(release::current_release(self.data_dir()));
        match release::prune(self.data_dir(), self.state.config.keep_releases, &protect) {
            Ok(deleted) if !deleted.is_empty() => {
                self.note(&format!("deleted old releases: {}", deleted.join(", ")))
                    .await
            }
            Ok(_) => {}
            Err(e) => {
                self.note(&format!("could not delete old releases: {e:#}"))
                    .await
            }
        }
        Ok(executable)
    }

    async fn fail(&mut self, error: StageError) -> anyhow::Result<()> {
        let stage = self.stage.take();
        if let Some(stage) = stage {
            db::finish_stage(&self.state.db, self.id(), stage, error.exit_code, "failed").await?;
        }
        self.note(&format!("failed: {}", error.message)).await;
        let tail = self.log.recent();
        let reason = if tail.is_empty() {
            error.message.clone()
        } else {
            format!("{}\n--- last lines ---\n{tail}", error.message)
        };
        tracing::warn!(deployment = self.id(), stage = ?stage, "deployment failed: {}", error.message);
        if db::transition(
            &self.state.db,
            self.id(),
            Status::Running,
            Status::Failed,
            Some(&reason),
        )
        .await?
        {
            self.state.publish_deployment(self.id()).await;
        }
        Ok(())
    }

    async fn time_out(&mut self) -> anyhow::Result<()> {
        // The stage's future was dropped with its process group guard: every process of
        // the stage has been sent SIGKILL by now.
        let limit = self.state.config.time_limit.as_secs();
        if let Some(stage) = self.stage.take() {
            db::finish_stage(&self.state.db, self.id(), stage, None, "timed_out").await?;
        }
        let reason = format!("ran past its time limit of {limit} s; its processes were killed");
        self.note(&reason).await;
        tracing::warn!(deployment = self.id(), "{reason}");
        if db::transition(
            &self.state.db,
            self.id(),
            Status::Running,
            Status::Stale,
            Some(&reason),
        )
        .await?
        {
            self.state.publish_deployment(self.id()).await;
        }
        Ok(())
    }

    /// Whether the restart strategy is `none`.
    pub fn install_only(&self) -> bool {
        self.state.config.restart == RestartStrategy::None
    }
}

/// A local repository path made absolute (stages run in the workspace); URLs unchanged.
fn repo_location(repo: &str) -> String {
    let path = Path::new(repo);
    if !repo.contains("://")
        && path.exists()
        && let Ok(abs) = path.canonicalize()
    {
        return abs.to_string_lossy().into_owned();
    }
    repo.to_string()
}
