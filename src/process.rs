//! Running a stage's command: in its own process group (so a time limit kills every
//! grandchild too), without a shell unless the configured line needs one, with stdout and
//! stderr streamed line by line into the deployment's log in arrival order.

use anyhow::Context;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::logs::{LogWriter, Stream};

/// After a command exits, how long its output pipe may stay silent before it is given up
/// on, in milliseconds.
pub const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Characters that make a configured command a shell line (run with `sh -c`).
const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '{', '}',
    '~', '#', '=', '\n',
];

/// A program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandLine {
    pub fn new(program: &str, args: &[&str]) -> Self {
        CommandLine {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A user-configured command: split on whitespace, or run by `sh -c` when it uses
    /// shell syntax (quotes, pipes, variables...).
    pub fn from_config(line: &str) -> Self {
        let line = line.trim();
        if line.contains(SHELL_CHARS) {
            return CommandLine::new("sh", &["-c", line]);
        }
        let mut words = line.split_whitespace().map(str::to_string);
        let program = words.next().unwrap_or_default();
        CommandLine {
            program,
            args: words.collect(),
        }
    }
}

/// Kills the whole process group when dropped: the stage ended, timed out, or its
/// future was dropped. A bare `kill_on_drop` would leave grandchildren alive.
pub struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; a stale group id yields ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Environment variables never passed to stage commands: they hold the server's secrets.
pub const WITHHELD_ENV: &[&str] = &[
    "SELFDEPLOY_WEBHOOK_SECRET",
    "SELFDEPLOY_DASHBOARD_PASSWORD",
    // The build's target directory is the workspace's own (the artifact path is relative to it).
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
];

/// A started command whose process group is killed if this is dropped.
pub struct Running {
    child: tokio::process::Child,
    guard: GroupGuard,
    rx: mpsc::Receiver<(Stream, String)>,
}

/// Which environment a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvPolicy {
    /// Build and user commands: the server's environment less [`WITHHELD_ENV`].
    Build,
    /// A candidate release in check mode: the server's own environment, settings included.
    Server,
}

/// Starts `cmd` in `cwd` as the leader of a new process group.
pub fn spawn(cmd: &CommandLine, cwd: &Path, env: EnvPolicy) -> anyhow::Result<Running> {
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if env == EnvPolicy::Build {
        for name in WITHHELD_ENV {
            command.env_remove(name);
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd.program))?;
    let guard = GroupGuard {
        pgid: child.id().map(|pid| pid as i32),
    };
    let (tx, rx) = mpsc::channel::<(Stream, String)>(256);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, Stream::Stderr, tx));
    }
    Ok(Running { child, guard, rx })
}

impl Running {
    /// The process group id (the leader's pid).
    pub fn pgid(&self) -> Option<i32> {
        self.guard.pgid
    }

    /// Logs the output until the command exits; returns its exit status. `keep_group`
    /// leaves processes it started in the background running (a restart command may start
    /// the app); otherwise they are killed with it.
    pub async fn wait(
        mut self,
        log: &mut LogWriter,
        keep_group: bool,
    ) -> anyhow::Result<ExitStatus> {
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                line = self.rx.recv(), if output_open => match line {
                    Some((stream, text)) => log.line(stream, &text).await,
                    None => output_open = false,
                },
                status = self.child.wait() => break status.context("waiting for the command")?,
            }
        };
        if keep_group {
            self.guard.pgid = None;
        } else {
            self.guard.kill();
        }
        // Everything printed before the exit is kept, however slowly it is stored; only a
        // pipe that stays open and silent (a process left running in the background) is
        // given up on.
        while output_open {
            match tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), self.rx.recv())
                .await
            {
                Ok(Some((stream, text))) => log.line(stream, &text).await,
                Ok(None) => output_open = false,
                Err(_) => break,
            }
        }
        Ok(status)
    }
}

/// Kills the process group `pgid` left by a previous server process, if it is still a
/// group led by a process working inside `dir` (so a recycled pid is never hit).
pub fn kill_orphaned_group(pgid: i32, dir: &Path) -> bool {
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pgid}/cwd")) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pgid}/stat")) else {
        return false;
    };
    // Field 5 of /proc/PID/stat (after the parenthesised name) is the process group.
    let group = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(2))
        .and_then(|g| g.parse::<i32>().ok());
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if group == Some(pgid) && cwd.starts_with(&dir) {
        GroupGuard { pgid: Some(pgid) }.kill();
        return true;
    }
    false
}

async fn forward(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf).into_owned();
                if tx.send((stream, text)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// "exit status 3" or "killed by signal 9".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_run_without_a_shell() {
        assert_eq!(
            CommandLine::from_config("cargo build --release --locked"),
            CommandLine::new("cargo", &["build", "--release", "--locked"])
        );
    }

    #[test]
    fn shell_lines_run_with_sh() {
        assert_eq!(
            CommandLine::from_config("make && cp a b"),
            CommandLine::new("sh", &["-c", "make && cp a b"])
        );
        assert_eq!(
            CommandLine::from_config("FOO=1 cargo build"),
            CommandLine::new("sh", &["-c", "FOO=1 cargo build"])
        );
    }
}
