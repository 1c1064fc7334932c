//! The dashboard's two event streams (`GET /events`, `GET /deployments/{id}/events`).
//!
//! Each message is an unnamed SSE `data:` event made of htmx out-of-band fragments. Every
//! stream subscribes to the event channel before it reads the tables, and starts with a
//! resync that replaces whole regions of the page, so a reconnect (or a lagging
//! subscriber) never loses or repeats anything on the page.

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::views::{self, Pager, Site};
use super::{DashError, PER_PAGE};
use crate::app::AppState;
use crate::db::{self, Deployment, DeploymentId, LogLine};
use crate::events::Event;
use crate::status::Status;

/// Interval of the keep-alive comment on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most log lines gathered into one message when a build prints fast.
pub const MAX_LINES_PER_MESSAGE: usize = 500;

/// One open event stream, counted against `max_event_streams` until it is dropped.
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// Takes a slot, or `None` when `max` streams are open already.
    pub fn acquire(counter: &Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(counter.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wraps a stream of events as the SSE response: keep-alive, no proxy buffering, and an
/// end as soon as the server shuts down (so graceful shutdown never waits on a stream).
pub fn sse_response<S>(shutdown: &CancellationToken, events: S) -> Response
where
    S: Stream<Item = SseEvent> + Send + 'static,
{
    let events = events
        .map(Ok::<_, Infallible>)
        .take_until(shutdown.clone().cancelled_owned());
    (
        [("x-accel-buffering", "no")],
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
        .into_response()
}

fn take_slot(state: &AppState) -> Result<StreamSlot, DashError> {
    StreamSlot::acquire(&state.event_streams, state.config.max_event_streams)
        .ok_or(DashError::TooManyStreams)
}

/// Logs a failure that ends a stream; the browser reconnects and resyncs.
fn ended<E: std::fmt::Display>(what: &str, e: E) -> Option<String> {
    tracing::warn!("ending a dashboard event stream: {what}: {e}");
    None
}

// ---------------------------------------------------------------------------------------
// The index page
// ---------------------------------------------------------------------------------------

struct IndexFeed {
    state: AppState,
    site: Site,
    rx: Receiver<Event>,
    page: i64,
    /// Ids of the rows the page shows since the last resync.
    shown: HashSet<DeploymentId>,
    /// The newest deployment id when the page was last resynced: a newer one is new.
    newest: DeploymentId,
    resync: bool,
    _slot: StreamSlot,
}

/// `GET /events?page=N`.
pub fn index_events(state: AppState, site: Site, page: i64) -> Result<Response, DashError> {
    let slot = take_slot(&state)?;
    // Subscribe before the first read, so nothing written after it is missed.
    let rx = state.events.subscribe();
    let feed = IndexFeed {
        state: state.clone(),
        site,
        rx,
        page,
        shown: HashSet::new(),
        newest: 0,
        resync: true,
        _slot: slot,
    };
    let messages = futures::stream::unfold(feed, |mut feed| async move {
        let html = feed.next_message().await?;
        Some((SseEvent::default().data(html), feed))
    });
    Ok(sse_response(&state.shutdown, messages))
}

impl IndexFeed {
    async fn next_message(&mut self) -> Option<String> {
        loop {
            if self.resync {
                self.resync = false;
                return match self.resync_message().await {
                    Ok(html) => Some(html),
                    Err(e) => ended("index resync", e),
                };
            }
            match self.rx.recv().await {
                Ok(Event::Deployment(d)) => match self.on_deployment(&d).await {
                    Ok(Some(html)) => return Some(html),
                    Ok(None) => {}
                    Err(e) => return ended("index update", e),
                },
                Ok(Event::Log { .. }) => {}
                Err(RecvError::Lagged(_)) => self.resync = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The table body, the pager and the serving panel, all replaced.
    async fn resync_message(&mut self) -> anyhow::Result<String> {
        let db = &self.state.db;
        let total = db::count(db).await?;
        let rows = db::list(db, PER_PAGE, (self.page - 1) * PER_PAGE).await?;
        self.newest = db::list(db, 1, 0).await?.first().map_or(0, |d| d.id);
        self.shown = rows.iter().map(|d| d.id).collect();
        let serving = db::serving(db).await?;
        let pager = Pager {
            page: self.page,
            per_page: PER_PAGE,
            total,
        };
        let mut html = views::tbody_oob(&self.site, &rows)?;
        html.push_str(&views::pager_oob(pager)?);
        html.push_str(&views::serving_oob(serving.as_ref())?);
        Ok(html)
    }

    async fn on_deployment(&mut self, d: &Deployment) -> anyhow::Result<Option<String>> {
        if d.id > self.newest {
            // A new deployment: rows shift, so the whole page is sent again (an insert of
            // one row is not idempotent against the resync it may race with).
            return self.resync_message().await.map(Some);
        }
        let mut html = String::new();
        if self.shown.contains(&d.id) {
            html.push_str(&views::row_oob(d)?);
        }
        if matches!(d.status(), Status::Deployed | Status::Success) {
            let serving = db::serving(&self.state.db).await?;
            html.push_str(&views::serving_oob(serving.as_ref())?);
        }
        Ok((!html.is_empty()).then_some(html))
    }
}

// ---------------------------------------------------------------------------------------
// One deployment's page
// ---------------------------------------------------------------------------------------

struct DeploymentFeed {
    state: AppState,
    rx: Receiver<Event>,
    id: DeploymentId,
    /// The last log line the page has been sent.
    last_seq: i64,
    /// The page already has the log up to `last_seq` (a reconnect): the first message
    /// appends what came after instead of replacing the whole log.
    resume: bool,
    resync: bool,
    _slot: StreamSlot,
}

/// `GET /deployments/{id}/events`, for a deployment that exists. Each message's SSE id is
/// the last log line the page has then; a reconnect that sends it back (`resume_after`,
/// from `Last-Event-ID`) gets only the lines after it, so none is lost or repeated.
pub fn deployment_events(
    state: AppState,
    id: DeploymentId,
    resume_after: Option<i64>,
) -> Result<Response, DashError> {
    let slot = take_slot(&state)?;
    let rx = state.events.subscribe();
    let feed = DeploymentFeed {
        state: state.clone(),
        rx,
        id,
        last_seq: resume_after.unwrap_or(0),
        resume: resume_after.is_some(),
        resync: true,
        _slot: slot,
    };
    let messages = futures::stream::unfold(feed, |mut feed| async move {
        let html = feed.next_message().await?;
        let event = SseEvent::default().id(feed.last_seq.to_string()).data(html);
        Some((event, feed))
    });
    Ok(sse_response(&state.shutdown, messages))
}

impl DeploymentFeed {
    async fn next_message(&mut self) -> Option<String> {
        loop {
            if self.resync {
                self.resync = false;
                return match self.resync_message().await {
                    Ok(html) => html,
                    Err(e) => ended("deployment resync", e),
                };
            }
            let first = match self.rx.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => {
                    self.resync = true;
                    continue;
                }
                Err(RecvError::Closed) => return None,
            };
            // Gather what else is waiting, so a chatty build sends few large messages.
            let mut lines: Vec<LogLine> = Vec::new();
            let mut changed: Option<Box<Deployment>> = None;
            let mut next = Some(first);
            while let Some(event) = next.take() {
                match event {
                    Event::Log {
                        deployment_id,
                        line,
                    } if deployment_id == self.id && line.seq > self.last_seq => {
                        self.last_seq = line.seq;
                        lines.push(line);
                    }
                    Event::Deployment(d) if d.id == self.id => changed = Some(d),
                    _ => {}
                }
                if lines.len() >= MAX_LINES_PER_MESSAGE {
                    break;
                }
                next = match self.rx.try_recv() {
                    Ok(event) => Some(event),
                    Err(TryRecvError::Lagged(_)) => {
                        self.resync = true;
                        None
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                };
            }
            if self.resync {
                // The resync replaces the whole log and header; what was gathered is in it.
                continue;
            }
            match self.update_message(&lines, changed.as_deref()).await {
                Ok(Some(html)) => return Some(html),
                Ok(None) => {}
                Err(e) => return ended("deployment update", e),
            }
        }
    }

    /// The header, and the whole log replaced (or, on a resumed stream, the lines the page
    /// lacks appended); `None` once the deployment is gone.
    async fn resync_message(&mut self) -> anyhow::Result<Option<String>> {
        let db = &self.state.db;
        let Some(d) = db::get(db, self.id).await? else {
            return Ok(None);
        };
        let stages = db::stages(db, self.id).await?;
        let resume = std::mem::take(&mut self.resume);
        let after = if resume { self.last_seq } else { 0 };
        let lines = db::log_lines(db, self.id, after).await?;
        self.last_seq = lines.last().map_or(after, |l| l.seq);
        let mut html = views::head_oob(&d, &stages)?;
        if !resume {
            html.push_str(&views::log_oob(&lines)?);
        } else if !lines.is_empty() {
            html.push_str(&views::log_append(&lines)?);
        }
        Ok(Some(html))
    }

    async fn update_message(
        &self,
        lines: &[LogLine],
        changed: Option<&Deployment>,
    ) -> anyhow::Result<Option<String>> {
        let mut html = String::new();
        if !lines.is_empty() {
            html.push_str(&views::log_append(lines)?);
        }
        if let Some(d) = changed {
            let stages = db::stages(&self.state.db, self.id).await?;
            html.push_str(&views::head_oob(d, &stages)?);
        }
        Ok((!html.is_empty()).then_some(html))
    }
}
