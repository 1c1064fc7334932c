//! What the dashboard shows: view models built from database rows, and the askama
//! templates that render the pages and the fragments sent over the event streams.
//!
//! Every piece of user text (commit messages, authors, branches, log lines, reasons) goes
//! through askama's HTML escaping; nothing here is marked `|safe`.

use askama::Template;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::db::{Deployment, LogLine, StageRow};
use crate::status::{Stage, Status};

/// What every page shows around its content.
#[derive(Clone, Debug)]
pub struct Site {
    /// URL of the stylesheet (versioned by its content).
    pub style_url: String,
    /// The branch whose pushes are deployed.
    pub branch: String,
}

/// `2026-12-03 19:20:01 UTC` for a time in Unix milliseconds.
pub fn format_time(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_else(|_| "?".into()),
        Err(_) => "?".into(),
    }
}

/// `0.4s`, `12s`, `1m 05s`, `2h 03m`.
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{:.1}s", ms as f64 / 1_000.0);
    }
    let secs = ms / 1_000;
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3_600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3_600, (secs % 3_600) / 60)
    }
}

/// The commit's page on GitHub, when `repository` looks like `owner/name` and `sha` like a
/// commit id.
pub fn commit_url(repository: &str, sha: &str) -> Option<String> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let (owner, name) = repository.split_once('/')?;
    let sha_ok = (7..=64).contains(&sha.len()) && sha.chars().all(|c| c.is_ascii_hexdigit());
    (part_ok(owner) && part_ok(name) && sha_ok)
        .then(|| format!("https://github.com/{owner}/{name}/commit/{sha}"))
}

/// One line of the deployments table.
#[derive(Clone, Debug)]
pub struct RowView {
    pub id: i64,
    pub status: &'static str,
    pub short_sha: String,
    pub commit_url: Option<String>,
    pub title: String,
    pub author: String,
    pub branch: String,
    pub received: String,
    /// How long it ran; empty when it never started, `…` while it runs.
    pub duration: String,
}

impl RowView {
    pub fn new(d: &Deployment) -> RowView {
        let duration = match (d.started_at, d.finished_at) {
            (Some(start), Some(end)) => format_duration(end - start),
            (Some(_), None) => "…".into(),
            (None, _) => String::new(),
        };
        RowView {
            id: d.id,
            status: d.status().as_str(),
            short_sha: d.short_sha().to_string(),
            commit_url: commit_url(&d.repository, &d.sha),
            title: d.title().to_string(),
            author: d.author.clone(),
            branch: d.branch.clone(),
            received: format_time(d.received_at),
            duration,
        }
    }
}

/// The "serving now" panel.
#[derive(Clone, Debug)]
pub struct ServingView {
    pub id: i64,
    pub short_sha: String,
    pub commit_url: Option<String>,
    pub title: String,
    pub author: String,
    pub since: String,
}

impl ServingView {
    pub fn new(d: &Deployment) -> ServingView {
        ServingView {
            id: d.id,
            short_sha: d.short_sha().to_string(),
            commit_url: commit_url(&d.repository, &d.sha),
            title: d.title().to_string(),
            author: d.author.clone(),
            since: format_time(d.finished_at.unwrap_or(d.received_at)),
        }
    }
}

/// Where a page of the table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pager {
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

impl Pager {
    pub fn pages(&self) -> i64 {
        ((self.total + self.per_page - 1) / self.per_page).max(1)
    }
    pub fn prev(&self) -> Option<i64> {
        (self.page > 1).then(|| (self.page - 1).min(self.pages()))
    }
    pub fn next(&self) -> Option<i64> {
        (self.page < self.pages()).then_some(self.page + 1)
    }
}

/// One stage in a deployment's timeline.
#[derive(Clone, Debug)]
pub struct StageView {
    pub name: &'static str,
    /// CSS class suffix: waiting, running, ok, failed, timed_out, interrupted, skipped.
    pub state: &'static str,
    /// The state as shown.
    pub word: &'static str,
    pub duration: String,
    pub exit: String,
}

fn stage_views(d: &Deployment, rows: &[StageRow]) -> Vec<StageView> {
    let settled = d.status().is_final() || d.status() == Status::Deployed;
    Stage::ALL
        .iter()
        .map(|stage| {
            let row = rows.iter().find(|r| r.name == stage.as_str());
            let (state, word) = match row {
                None if settled => ("skipped", "not run"),
                None => ("waiting", "waiting"),
                Some(r) => match (r.outcome.as_deref(), r.finished_at) {
                    (Some("ok"), _) => ("ok", "ok"),
                    (Some("failed"), _) => ("failed", "failed"),
                    (Some("timed_out"), _) => ("timed_out", "timed out"),
                    (_, None) if settled => ("interrupted", "unfinished"),
                    (_, None) => ("running", "running"),
                    _ => ("ok", "done"),
                },
            };
            StageView {
                name: stage.as_str(),
                state,
                word,
                duration: row
                    .and_then(|r| r.finished_at.map(|end| format_duration(end - r.started_at)))
                    .unwrap_or_default(),
                exit: row
                    .and_then(|r| r.exit_code)
                    .map(|code| format!("exit {code}"))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The deployment page's header: status, facts, stage timeline and reason.
#[derive(Clone, Debug)]
pub struct HeadView {
    pub row: RowView,
    pub sha: String,
    pub git_ref: String,
    pub pusher: String,
    pub started: String,
    pub finished: String,
    pub release: String,
    pub reason: Option<String>,
    pub lines_cut: i64,
    pub stages: Vec<StageView>,
}

impl HeadView {
    pub fn new(d: &Deployment, stages: &[StageRow]) -> HeadView {
        HeadView {
            row: RowView::new(d),
            sha: d.sha.clone(),
            git_ref: d.git_ref.clone(),
            pusher: d.pusher.clone(),
            started: d.started_at.map(format_time).unwrap_or_default(),
            finished: d.finished_at.map(format_time).unwrap_or_default(),
            release: d.release.clone().unwrap_or_default(),
            reason: d.reason.clone().filter(|r| !r.trim().is_empty()),
            lines_cut: d.log_lines_cut,
            stages: stage_views(d, stages),
        }
    }
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexTemplate<'a> {
    site: &'a Site,
    serving: Option<ServingView>,
    rows: Vec<RowView>,
    pager: Pager,
    events_url: String,
    worker_down: bool,
    statuses: [Status; 7],
}

#[derive(Template)]
#[template(path = "_row.html")]
struct RowTemplate {
    r: RowView,
    row_oob: bool,
}

#[derive(Template)]
#[template(path = "_tbody.html")]
struct TbodyTemplate<'a> {
    site: &'a Site,
    rows: Vec<RowView>,
    body_oob: bool,
}

#[derive(Template)]
#[template(path = "_serving.html")]
struct ServingTemplate {
    serving: Option<ServingView>,
    panel_oob: bool,
}

#[derive(Template)]
#[template(path = "_pager.html")]
struct PagerTemplate {
    pager: Pager,
    pager_oob: bool,
}

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentTemplate<'a> {
    site: &'a Site,
    head: HeadView,
    message: String,
    lines: &'a [LogLine],
    /// The event stream to follow, while the deployment can still change.
    events_url: Option<String>,
}

#[derive(Template)]
#[template(path = "_head.html")]
struct HeadTemplate {
    head: HeadView,
    head_oob: bool,
}

#[derive(Template)]
#[template(path = "_log.html")]
struct LogTemplate<'a> {
    lines: &'a [LogLine],
    log_oob: bool,
}

#[derive(Template)]
#[template(path = "_log_append.html")]
struct LogAppendTemplate<'a> {
    lines: &'a [LogLine],
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate<'a> {
    site: &'a Site,
    code: u16,
    title: &'a str,
    message: &'a str,
}

/// What the index page shows.
pub struct IndexData<'a> {
    pub serving: Option<&'a Deployment>,
    pub rows: &'a [Deployment],
    pub pager: Pager,
    pub worker_down: bool,
}

/// The event stream URL of an index page.
pub fn index_events_url(page: i64) -> String {
    if page == 1 {
        "/events".into()
    } else {
        format!("/events?page={page}")
    }
}

/// `GET /`: the serving panel and one page of the table.
pub fn index_page(site: &Site, data: &IndexData<'_>) -> askama::Result<String> {
    IndexTemplate {
        site,
        serving: data.serving.map(ServingView::new),
        rows: data.rows.iter().map(RowView::new).collect(),
        pager: data.pager,
        events_url: index_events_url(data.pager.page),
        worker_down: data.worker_down,
        statuses: Status::ALL,
    }
    .render()
}

/// `<tr id="deploy-N" hx-swap-oob="true">`: one row replaced in place.
pub fn row_oob(d: &Deployment) -> askama::Result<String> {
    RowTemplate {
        r: RowView::new(d),
        row_oob: true,
    }
    .render()
}

/// `<tbody id="deploys-body" hx-swap-oob="true">`: the whole table body replaced.
pub fn tbody_oob(site: &Site, rows: &[Deployment]) -> askama::Result<String> {
    TbodyTemplate {
        site,
        rows: rows.iter().map(RowView::new).collect(),
        body_oob: true,
    }
    .render()
}

/// `<section id="serving" hx-swap-oob="true">`: the serving-now panel replaced.
pub fn serving_oob(serving: Option<&Deployment>) -> askama::Result<String> {
    ServingTemplate {
        serving: serving.map(ServingView::new),
        panel_oob: true,
    }
    .render()
}

/// `<nav id="pager" hx-swap-oob="true">`: the page links and counts replaced.
pub fn pager_oob(pager: Pager) -> askama::Result<String> {
    PagerTemplate {
        pager,
        pager_oob: true,
    }
    .render()
}

/// `GET /deployments/{id}`.
pub fn deployment_page(
    site: &Site,
    d: &Deployment,
    stages: &[StageRow],
    lines: &[LogLine],
) -> askama::Result<String> {
    DeploymentTemplate {
        site,
        head: HeadView::new(d, stages),
        message: d.message.clone(),
        lines,
        events_url: (!d.status().is_final()).then(|| format!("/deployments/{}/events", d.id)),
    }
    .render()
}

/// `<section id="deploy-head" hx-swap-oob="true">`: status, stages and reason replaced.
pub fn head_oob(d: &Deployment, stages: &[StageRow]) -> askama::Result<String> {
    HeadTemplate {
        head: HeadView::new(d, stages),
        head_oob: true,
    }
    .render()
}

/// `<div id="log" hx-swap-oob="true">`: the whole log replaced (idempotent resync).
pub fn log_oob(lines: &[LogLine]) -> askama::Result<String> {
    LogTemplate {
        lines,
        log_oob: true,
    }
    .render()
}

/// `<div hx-swap-oob="beforeend:#log">`: lines appended to the log.
pub fn log_append(lines: &[LogLine]) -> askama::Result<String> {
    LogAppendTemplate { lines }.render()
}

/// An error page; `message` is ours, never an internal cause.
pub fn error_page(site: &Site, code: u16, title: &str, message: &str) -> askama::Result<String> {
    ErrorTemplate {
        site,
        code,
        title,
        message,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(format_time(1_796_325_601_000), "2026-12-03 19:20:01 UTC");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_duration(400), "0.4s");
        assert_eq!(format_duration(12_900), "12s");
        assert_eq!(format_duration(65_000), "1m 05s");
        assert_eq!(format_duration(7_380_000), "2h 03m");
        assert_eq!(format_duration(-5), "0.0s");
    }

    #[test]
    fn commit_links_only_for_owner_name() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            commit_url("acme/app", sha).as_deref(),
            Some("https://github.com/acme/app/commit/0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(commit_url("/srv/repo.git", sha), None);
        assert_eq!(commit_url("acme/app/extra", sha), None);
        assert_eq!(commit_url("../x", sha), None);
        assert_eq!(commit_url("acme/app", "not-a-sha"), None);
    }

    #[test]
    fn pager_bounds() {
        let p = Pager {
            page: 1,
            per_page: 50,
            total: 10_000,
        };
        assert_eq!((p.pages(), p.prev(), p.next()), (200, None, Some(2)));
        let p = Pager { page: 200, ..p };
        assert_eq!((p.prev(), p.next()), (Some(199), None));
        let p = Pager {
            page: 3,
            per_page: 50,
            total: 0,
        };
        assert_eq!((p.pages(), p.prev(), p.next()), (1, Some(1), None));
    }
}
