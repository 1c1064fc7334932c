//! The in-process event channel: every status change, stage change and log line is
//! published here after its write commits. The dashboard's event stream and the tests
//! subscribe; a subscriber that falls behind is told so (`Lagged`) and re-reads the table.

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
