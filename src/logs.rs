//! Deployment logs: every line a stage prints is masked for secrets, stored (head and tail
//! kept, the middle of a chatty log cut) and published as it happens.

use sqlx::SqlitePool;
use std::collections::VecDeque;

use crate::db::{self, DeploymentId, LogLine};
use crate::events::{Event, Events};

/// Lines kept from the start of a log.
pub const HEAD_LINES: i64 = 2_000;
/// Lines kept from the end of a log; lines between head and tail are deleted as they age.
pub const TAIL_LINES: i64 = 2_000;
/// Longest stored line, in bytes; the rest is cut and marked.
pub const MAX_LINE_BYTES: usize = 4_096;
/// Lines remembered for a failure's reason.
pub const REASON_LINES: usize = 20;
/// Shortest value that is masked: shorter "secrets" would mask ordinary words.
pub const MIN_MASKED_CHARS: usize = 4;
/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// Replaces every known secret value with [`MASK`].
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.chars().count() >= MIN_MASKED_CHARS)
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, line: &str) -> String {
        let mut out = line.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// selfdeploy's own notes between commands.
    Selfdeploy,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Selfdeploy => "selfdeploy",
        }
    }
}

/// Appends the log of one deployment.
pub struct LogWriter {
    pool: SqlitePool,
    events: Events,
    deployment_id: DeploymentId,
    redactor: Redactor,
    seq: i64,
    recent: VecDeque<String>,
}

impl LogWriter {
    pub fn new(
        pool: SqlitePool,
        events: Events,
        deployment_id: DeploymentId,
        redactor: Redactor,
    ) -> Self {
        LogWriter {
            pool,
            events,
            deployment_id,
            redactor,
            seq: 0,
            recent: VecDeque::with_capacity(REASON_LINES),
        }
    }

    /// Masks, stores and publishes one line. A storage error is logged, never fatal: a
    /// full log must not fail a deployment.
    pub async fn line(&mut self, stream: Stream, text: &str) {
        let mut line = self.redactor.redact(text.trim_end_matches(['\n', '\r']));
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [line cut]");
        }
        self.seq += 1;
        let entry = LogLine {
            seq: self.seq,
            stream: stream.as_str().to_string(),
            line,
            at: db::now_ms(),
        };
        if let Err(e) = self.store(&entry).await {
            tracing::warn!(
                deployment = self.deployment_id,
                "cannot store a log line: {e}"
            );
        }
        if self.recent.len() == REASON_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(entry.line.clone());
        self.events.publish(Event::Log {
            deployment_id: self.deployment_id,
            line: entry,
        });
    }

    async fn store(&self, entry: &LogLine) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO log_lines (deployment_id, seq, stream, line, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(self.deployment_id)
        .bind(entry.seq)
        .bind(&entry.stream)
        .bind(&entry.line)
        .bind(entry.at)
        .execute(&mut *tx)
        .await?;
        let drop_seq = entry.seq - TAIL_LINES;
        if drop_seq > HEAD_LINES {
            sqlx::query("DELETE FROM log_lines WHERE deployment_id = ? AND seq = ?")
                .bind(self.deployment_id)
                .bind(drop_seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE deployments SET log_lines_cut = log_lines_cut + 1 WHERE id = ?")
                .bind(self.deployment_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The last lines written, for a failure's reason.
    pub fn recent(&self) -> String {
        Vec::from(self.recent.clone()).join("\n")
    }
}
