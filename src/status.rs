//! The deployment state machine shared by every part (see `../shared/notes/statuses.md`
//! in the project history and ARCHITECTURE.md): the `deployments` table is its only
//! source of truth.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Where a deployment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted push, waiting for the worker.
    Queued,
    /// The worker is in one of the stages.
    Running,
    /// A newer push for the same branch was queued when the worker took this one.
    Superseded,
    /// Finished well and later replaced (or installed with restart `none`).
    Success,
    /// A stage failed, the server was interrupted, or the release did not come up.
    Failed,
    /// Ran past its time limit; its process group was killed.
    Stale,
    /// Its release is the one serving now.
    Deployed,
}

impl Status {
    /// Every status, in the order the dashboard explains them.
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Running,
        Status::Superseded,
        Status::Success,
        Status::Failed,
        Status::Stale,
        Status::Deployed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Superseded => "superseded",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Stale => "stale",
            Status::Deployed => "deployed",
        }
    }

    /// Whether the deployment can still change without a new push.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Superseded | Status::Success | Status::Failed | Status::Stale
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown deployment status {s:?}"))
    }
}

/// The pipeline's stages, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Fetch,
    Build,
    Install,
    Restart,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Fetch, Stage::Build, Stage::Install, Stage::Restart];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Build => "build",
            Stage::Install => "install",
            Stage::Restart => "restart",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown stage {s:?}"))
    }
}
