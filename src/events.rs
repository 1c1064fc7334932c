//! The in-process event channel: every status change, stage change and log line is
//! published here after its write commits. The dashboard's event stream and the tests
//! subscribe; a subscriber that falls behind is told so (`Lagged`) and re-reads the table.

use axum::http::HeaderMap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::db::{Deployment, DeploymentId, LogLine};

/// Events buffered per subscriber before it counts as lagging.
pub const CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A deployment was created or changed (status, stage, release): its row after the write.
    Deployment(Box<Deployment>),
    /// A log line was stored.
    Log {
        deployment_id: DeploymentId,
        #[serde(flatten)]
        line: LogLine,
    },
}

/// Cheap to clone; all clones publish to the same subscribers.
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Events { tx }
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The `Last-Event-ID` a reconnecting event-stream client sends (the id of the last message
/// it received): `None` on a first connect, an error when it is not a number, since every
/// id this server sends is one.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, &'static str> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or("Last-Event-ID must be a whole number")
}
