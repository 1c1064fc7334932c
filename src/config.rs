//! Settings: one clap struct (flags and `SELFDEPLOY_*` environment variables) merged over an
//! optional TOML file, checked once at start-up into a [`Config`].
//!
//! Precedence: flag or environment variable, then the TOML file, then the default.

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default listen address: loopback, since a reverse proxy usually terminates TLS in front.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "selfdeploy-data";
/// Default branch whose pushes are deployed.
pub const DEFAULT_BRANCH: &str = "main";
/// Default build command, run in the build workspace.
pub const DEFAULT_BUILD_COMMAND: &str = "cargo build --release --locked";
/// Default artifact, relative to the build workspace.
pub const DEFAULT_ARTIFACT: &str = "target/release/selfdeploy";
/// Default time limit of one deployment, in seconds (30 minutes).
pub const DEFAULT_TIME_LIMIT_SECS: u64 = 30 * 60;
/// Default number of releases kept on disk.
pub const DEFAULT_KEEP_RELEASES: usize = 5;
/// Default deadline for a new release's health check, in seconds.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 30;
/// Default cap on concurrent dashboard event streams (connections).
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 256;

/// How the server turns an installed release into the serving one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartStrategy {
    /// The server hands its listening socket to the new release and becomes it.
    Exec,
    /// Run `restart_command` (e.g. `systemctl restart myapp`).
    Command,
    /// Install only.
    None,
}

/// selfdeploy: a web server that deploys itself when its repository gets a push.
///
/// Every setting is also read from the environment (`SELFDEPLOY_` + the flag in upper
/// snake case) and from the optional TOML file given with `--config`.
#[derive(Clone, Debug, Default, Parser, Deserialize)]
#[command(version, about, long_about = None)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings (keys as the flags, with `_` for `-`); flags and environment win.
    #[arg(long, env = "SELFDEPLOY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Check this executable as a candidate release, then exit (run by the `exec` restart).
    #[arg(long, env = "SELFDEPLOY_CHECK", hide = true)]
    #[serde(skip)]
    pub check: bool,

    /// Address and port to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SELFDEPLOY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory for the database, build workspace, releases and logs [default: selfdeploy-data].
    #[arg(long, env = "SELFDEPLOY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Webhook secret. Prefer the environment variable or a file: flags show in `ps`.
    #[arg(long, env = "SELFDEPLOY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// File holding the webhook secret [default: <data-dir>/webhook-secret, generated if missing].
    #[arg(long, env = "SELFDEPLOY_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Repository to fetch pushed commits from (URL or path) [default: the `origin` of the
    /// git checkout the server is started in].
    #[arg(long, env = "SELFDEPLOY_REPO")]
    pub repo: Option<String>,

    /// Branch whose pushes are deployed [default: main].
    #[arg(long, env = "SELFDEPLOY_BRANCH")]
    pub branch: Option<String>,

    /// Expected GitHub repository `owner/name`; pushes for any other are refused.
    #[arg(long, env = "SELFDEPLOY_GITHUB_REPOSITORY")]
    pub github_repository: Option<String>,

    /// Build command, run in the workspace [default: cargo build --release --locked].
    #[arg(long, env = "SELFDEPLOY_BUILD_COMMAND")]
    pub build_command: Option<String>,

    /// Executable the build produces, relative to the workspace [default: target/release/selfdeploy].
    #[arg(long, env = "SELFDEPLOY_ARTIFACT")]
    pub artifact: Option<PathBuf>,

    /// Time limit of one deployment, in seconds [default: 1800].
    #[arg(long, env = "SELFDEPLOY_TIME_LIMIT")]
    pub time_limit: Option<u64>,

    /// Number of releases kept on disk [default: 5].
    #[arg(long, env = "SELFDEPLOY_KEEP_RELEASES")]
    pub keep_releases: Option<usize>,

    /// How a new release goes live: exec, command or none [default: exec].
    #[arg(long, env = "SELFDEPLOY_RESTART")]
    pub restart: Option<RestartStrategy>,

    /// Command run by the `command` restart strategy, e.g. `systemctl restart myapp`.
    #[arg(long, env = "SELFDEPLOY_RESTART_COMMAND")]
    pub restart_command: Option<String>,

    /// Names of environment variables whose values are masked as `***` in build logs
    /// (comma-separated).
    #[arg(long, env = "SELFDEPLOY_SECRET_ENV", value_delimiter = ',')]
    pub secret_env: Option<Vec<String>>,

    /// Password for the dashboard and its event stream (user name: anything). Unset: open.
    #[arg(long, env = "SELFDEPLOY_DASHBOARD_PASSWORD", hide_env_values = true)]
    pub dashboard_password: Option<String>,

    /// Deadline for a new release's health check, in seconds [default: 30].
    #[arg(long, env = "SELFDEPLOY_HEALTH_TIMEOUT")]
    pub health_timeout: Option<u64>,

    /// Most dashboard event streams open at once; more get 503 [default: 256].
    #[arg(long, env = "SELFDEPLOY_MAX_EVENT_STREAMS")]
    pub max_event_streams: Option<usize>,
}

/// A setting that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

/// Where the webhook secret comes from.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// Given directly (environment variable or flag).
    Value(String),
    /// Read from this file; `generate` when it may be created if missing.
    File { path: PathBuf, generate: bool },
}

/// The checked settings every part of the server reads.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub secret: SecretSource,
    pub repo: String,
    pub branch: String,
    pub github_repository: Option<String>,
    pub build_command: String,
    pub artifact: PathBuf,
    pub time_limit: Duration,
    pub keep_releases: usize,
    pub restart: RestartStrategy,
    pub restart_command: Option<String>,
    pub secret_env: Vec<String>,
    pub dashboard_password: Option<String>,
    pub health_timeout: Duration,
    pub max_event_streams: usize,
}

impl Settings {
    /// Fills every unset field from `file`.
    fn or(self, file: Settings) -> Settings {
        Settings {
            config: self.config,
            check: self.check,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            webhook_secret: self.webhook_secret.or(file.webhook_secret),
            webhook_secret_file: self.webhook_secret_file.or(file.webhook_secret_file),
            repo: self.repo.or(file.repo),
            branch: self.branch.or(file.branch),
            github_repository: self.github_repository.or(file.github_repository),
            build_command: self.build_command.or(file.build_command),
            artifact: self.artifact.or(file.artifact),
            time_limit: self.time_limit.or(file.time_limit),
            keep_releases: self.keep_releases.or(file.keep_releases),
            restart: self.restart.or(file.restart),
            restart_command: self.restart_command.or(file.restart_command),
            secret_env: self.secret_env.or(file.secret_env),
            dashboard_password: self.dashboard_password.or(file.dashboard_password),
            health_timeout: self.health_timeout.or(file.health_timeout),
            max_event_streams: self.max_event_streams.or(file.max_event_streams),
        }
    }

    /// Reads the TOML file (if any), applies defaults and checks every setting.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid("config", format!("cannot read {}: {e}", path.display()))
                })?;
                let file: Settings = toml::from_str(&text).map_err(|e| {
                    let msg = e.message().to_string();
                    invalid("config", format!("{}: {msg}", path.display()))
                })?;
                self.or(file)
            }
            None => self,
        };
        merged.into_config()
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        // Resolved once against the start-up directory: stage commands run in other
        // directories, and the `current` link must not point at a relative path.
        let data_dir = std::path::absolute(&data_dir)
            .map_err(|e| invalid("data_dir", format!("cannot be resolved: {e}")))?;
        let secret = match (self.webhook_secret, self.webhook_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "webhook_secret",
                    "set either webhook_secret or webhook_secret_file, not both",
                ));
            }
            (Some(value), None) => {
                if value.trim().chars().count() < crate::secret::MIN_SECRET_CHARS {
                    return Err(invalid(
                        "webhook_secret",
                        format!(
                            "must be at least {} characters",
                            crate::secret::MIN_SECRET_CHARS
                        ),
                    ));
                }
                SecretSource::Value(value)
            }
            (None, Some(path)) => SecretSource::File {
                path,
                generate: false,
            },
            (None, None) => SecretSource::File {
                path: data_dir.join(crate::secret::SECRET_FILE_NAME),
                generate: true,
            },
        };
        let branch = self.branch.unwrap_or_else(|| DEFAULT_BRANCH.to_string());
        check_branch(&branch)?;
        if let Some(repo) = &self.github_repository {
            check_github_repository(repo)?;
        }
        let repo = match self.repo {
            Some(repo) if repo.trim().is_empty() => {
                return Err(invalid("repo", "must not be empty"));
            }
            Some(repo) => repo,
            None => default_repo()?,
        };
        let build_command = self
            .build_command
            .unwrap_or_else(|| DEFAULT_BUILD_COMMAND.to_string());
        if build_command.trim().is_empty() {
            return Err(invalid("build_command", "must not be empty"));
        }
        let artifact = self
            .artifact
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ARTIFACT));
        check_relative("artifact", &artifact)?;
        let time_limit = self.time_limit.unwrap_or(DEFAULT_TIME_LIMIT_SECS);
        if time_limit == 0 {
            return Err(invalid("time_limit", "must be at least 1 second"));
        }
        let keep_releases = self.keep_releases.unwrap_or(DEFAULT_KEEP_RELEASES);
        if keep_releases < 2 {
            return Err(invalid(
                "keep_releases",
                "must be at least 2 (the serving release and the one before it)",
            ));
        }
        let restart = self.restart.unwrap_or(RestartStrategy::Exec);
        let restart_command = self.restart_command.filter(|c| !c.trim().is_empty());
        if restart == RestartStrategy::Command && restart_command.is_none() {
            return Err(invalid(
                "restart_command",
                "required when restart is `command`",
            ));
        }
        let health_timeout = self.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS);
        if health_timeout == 0 {
            return Err(invalid("health_timeout", "must be at least 1 second"));
        }
        let max_event_streams = self.max_event_streams.unwrap_or(DEFAULT_MAX_EVENT_STREAMS);
        if max_event_streams == 0 {
            return Err(invalid("max_event_streams", "must be at least 1"));
        }
        Ok(Config {
            listen: self
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
            data_dir,
            secret,
            repo,
            branch,
            github_repository: self.github_repository,
            build_command,
            artifact,
            time_limit: Duration::from_secs(time_limit),
            keep_releases,
            restart,
            restart_command,
            secret_env: self.secret_env.unwrap_or_default(),
            dashboard_password: self.dashboard_password.filter(|p| !p.is_empty()),
            health_timeout: Duration::from_secs(health_timeout),
            max_event_streams,
        })
    }
}

fn check_branch(branch: &str) -> Result<(), ConfigError> {
    let ok = !branch.is_empty()
        && !branch.starts_with('-')
        && !branch.contains("..")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "branch",
            format!("{branch:?} is not a plain branch name (letters, digits, - _ . /)"),
        ))
    }
}

fn check_github_repository(repo: &str) -> Result<(), ConfigError> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(()),
        _ => Err(invalid(
            "github_repository",
            format!("{repo:?} is not of the form owner/name"),
        )),
    }
}

fn check_relative(setting: &'static str, path: &Path) -> Result<(), ConfigError> {
    use std::path::Component;
    if path.as_os_str().is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(
            setting,
            format!(
                "{} must be a relative path inside the workspace",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The `origin` of the git checkout the server starts in, else that checkout itself.
fn default_repo() -> Result<String, ConfigError> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    git(&["remote", "get-url", "origin"])
        .or_else(|| git(&["rev-parse", "--show-toplevel"]))
        .ok_or_else(|| {
            invalid(
                "repo",
                "not set, and the working directory is not a git checkout to fetch from",
            )
        })
}
