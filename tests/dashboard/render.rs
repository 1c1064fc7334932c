//! Rendered markup of the pages and of every fragment kind the event streams send, from
//! fixed rows, against the snapshots in tests/snapshots/.

use selfdeploy::dashboard::views::{self, IndexData, Pager, Site};
use selfdeploy::db::{self, LogLine, StageRow};
use selfdeploy::status::Status;

use crate::support::{XSS, XSS_ESCAPED, count, fixture, snapshot};

fn site() -> Site {
    Site {
        style_url: "/static/style-test.css".into(),
        branch: "main".into(),
    }
}

fn fixture_rows() -> Vec<db::Deployment> {
    let mut failed = fixture(3, Status::Failed, "Add health check\n\nAnd its test.");
    failed.stage = Some("build".into());
    failed.reason = Some("build failed (exit 101):\nerror[E0425]: cannot find value `x`".into());
    let mut local = fixture(2, Status::Success, "Local repository: no link");
    local.repository = "/srv/git/shop.git".into();
    vec![
        fixture(7, Status::Queued, &format!("{XSS}\n\nsecond line")),
        fixture(6, Status::Running, "Speed up the build"),
        fixture(5, Status::Deployed, "Render dates in UTC"),
        fixture(4, Status::Superseded, "Typo"),
        failed,
        local,
        fixture(1, Status::Stale, "Slow migration"),
    ]
}

fn log_fixture() -> Vec<LogLine> {
    [
        (1, "selfdeploy", "$ cargo build --release --locked"),
        (2, "stdout", "   Compiling shop v0.1.0"),
        (3, "stderr", XSS),
    ]
    .into_iter()
    .map(|(seq, stream, line)| LogLine {
        seq,
        stream: stream.into(),
        line: line.into(),
        at: 1_796_325_601_000 + seq,
    })
    .collect()
}

fn stage_fixture() -> Vec<StageRow> {
    let t = 1_796_325_601_000;
    vec![
        StageRow {
            name: "fetch".into(),
            started_at: t,
            finished_at: Some(t + 2_300),
            exit_code: Some(0),
            outcome: Some("ok".into()),
        },
        StageRow {
            name: "build".into(),
            started_at: t + 2_300,
            finished_at: Some(t + 95_000),
            exit_code: Some(101),
            outcome: Some("failed".into()),
        },
    ]
}

#[test]
fn index_page_snapshot() {
    let rows = fixture_rows();
    let serving = rows[2].clone();
    let data = IndexData {
        serving: Some(&serving),
        rows: &rows,
        pager: Pager {
            page: 2,
            per_page: 50,
            total: 157,
        },
        worker_down: false,
    };
    let html = views::index_page(&site(), &data).unwrap();
    assert!(html.contains(r#"<script src="/static/htmx-4.0.1.min.js"></script>"#));
    assert!(html.contains(r#"<script src="/static/hx-sse-4.0.1.min.js"></script>"#));
    assert_eq!(count(&html, "<script"), 2, "no script of our own");
    assert!(html.contains(r#"<div hx-sse:connect="/events?page=2" hx-swap="none"></div>"#));
    assert!(html.contains(r#"<tbody id="deploys-body">"#));
    assert!(html.contains(r#"<tr id="deploy-7" class="st-queued">"#));
    assert!(html.contains(r#"<span class="badge st-queued">queued</span>"#));
    assert!(html.contains(XSS_ESCAPED) && !html.contains(XSS));
    assert!(
        !html.contains("second line"),
        "the table shows the first line only"
    );
    assert!(html.contains(
        r#"<a href="https://github.com/acme/shop/commit/05e5c1b2a3d4f5e6a7b8c9d0e1f2a3b4c5d6e7f8"><code>05e5c1b</code></a>"#
    ));
    assert!(
        html.contains("<td class=\"c-sha\"><code>02e5c1b</code></td>"),
        "no link off GitHub"
    );
    assert!(html.contains(r#"<time>2026-12-03 19:27:01 UTC</time>"#));
    assert!(html.contains(r#"<td class="c-dur">1m 05s</td>"#));
    assert!(
        html.contains(r#"<a rel="prev" href="/?page=1">"#)
            && html.contains(r#"<a rel="next" href="/?page=3">"#)
    );
    assert!(html.contains(r#"<section id="serving""#) && !html.contains("hx-swap-oob"));
    snapshot("index", &html);

    let empty = IndexData {
        serving: None,
        rows: &[],
        pager: Pager {
            page: 1,
            per_page: 50,
            total: 0,
        },
        worker_down: true,
    };
    let html = views::index_page(&site(), &empty).unwrap();
    assert!(html.contains(r#"<div hx-sse:connect="/events" hx-swap="none"></div>"#));
    assert!(
        html.contains("No deployment is serving yet") && html.contains("No deployments here yet")
    );
    assert!(html.contains(r#"class="banner""#), "worker down is shown");
}

#[test]
fn fragment_snapshots() {
    let rows = fixture_rows();
    let row = views::row_oob(&rows[0]).unwrap();
    assert!(
        row.starts_with(r#"<tr id="deploy-7" class="st-queued" hx-swap-oob="true">"#),
        "{row}"
    );
    assert!(row.contains(XSS_ESCAPED) && !row.contains(XSS));
    snapshot("row_update", &row);

    let running = views::row_oob(&rows[1]).unwrap();
    assert!(running.contains(r#"<span class="badge st-running">running</span>"#));
    assert!(running.contains(r#"<td class="c-dur">…</td>"#));

    let body = views::tbody_oob(&site(), &rows).unwrap();
    assert!(
        body.starts_with(r#"<tbody id="deploys-body" hx-swap-oob="true">"#),
        "{body}"
    );
    assert_eq!(
        count(&body, "hx-swap-oob"),
        1,
        "rows inside a resync must not be OOB"
    );
    assert_eq!(count(&body, "<tr id=\"deploy-"), rows.len());
    assert!(body.find("deploy-7").unwrap() < body.find("deploy-6").unwrap());
    snapshot("tbody_resync", &body);

    let panel = views::serving_oob(Some(&rows[0])).unwrap();
    assert!(panel.starts_with(
        r#"<section id="serving" class="serving" aria-label="Serving now" hx-swap-oob="true">"#
    ));
    assert!(panel.contains(XSS_ESCAPED) && !panel.contains(XSS));
    assert!(
        panel.contains("live since <time>2026-12-03 19:27:01 UTC</time>"),
        "{panel}"
    );
    snapshot(
        "serving_panel",
        &views::serving_oob(Some(&rows[2])).unwrap(),
    );
    let none = views::serving_oob(None).unwrap();
    assert!(none.contains("hx-swap-oob=\"true\"") && none.contains("No deployment is serving yet"));

    let pager = views::pager_oob(Pager {
        page: 1,
        per_page: 50,
        total: 51,
    })
    .unwrap();
    assert!(
        pager
            .starts_with(r#"<nav id="pager" class="pager" aria-label="Pages" hx-swap-oob="true">"#)
    );
    assert!(pager.contains("Page 1 of 2 · 51 deployments"));

    let lines = log_fixture();
    let append = views::log_append(&lines).unwrap();
    assert!(
        append.starts_with(r#"<div hx-swap-oob="beforeend:#log">"#),
        "{append}"
    );
    assert!(append.contains(
        r#"<div id="line-1" class="ln ln-selfdeploy">$ cargo build --release --locked</div>"#
    ));
    assert!(append.contains(&format!(
        r#"<div id="line-3" class="ln ln-stderr">{XSS_ESCAPED}</div>"#
    )));
    assert!(!append.contains(XSS));
    snapshot("log_append", &append);

    let region = views::log_oob(&lines).unwrap();
    assert!(
        region.starts_with(r#"<div id="log" class="log" hx-swap-oob="true">"#),
        "{region}"
    );
    assert_eq!(count(&region, "hx-swap-oob"), 1);
    snapshot("log_region", &region);

    let head = views::head_oob(&rows[4], &stage_fixture()).unwrap();
    assert!(head.starts_with(
        r#"<section id="deploy-head" class="deploy-head st-failed" hx-swap-oob="true">"#
    ));
    assert!(head.contains(
        "<pre class=\"reason\">build failed (exit 101):\nerror[E0425]: cannot find value `x`</pre>"
    ));
    assert!(head.contains(r#"<li class="stage sg-ok"><span class="sg-name">fetch</span> <span class="sg-word">ok</span> <span class="sg-dur">2s</span> <span class="sg-exit">exit 0</span></li>"#));
    assert!(head.contains(r#"<li class="stage sg-failed"><span class="sg-name">build</span> <span class="sg-word">failed</span> <span class="sg-dur">1m 32s</span> <span class="sg-exit">exit 101</span></li>"#));
    assert!(head.contains(r#"<li class="stage sg-skipped"><span class="sg-name">install</span> <span class="sg-word">not run</span>"#));
    snapshot("deployment_head", &head);
}

#[test]
fn deployment_page_snapshot() {
    let mut d = fixture(
        9,
        Status::Running,
        &format!("{XSS}\n\nThe body, <b>not bold</b>."),
    );
    d.stage = Some("build".into());
    let mut stages = stage_fixture();
    stages[1].finished_at = None;
    stages[1].exit_code = None;
    stages[1].outcome = None;
    let html = views::deployment_page(&site(), &d, &stages, &log_fixture()).unwrap();
    assert!(html.contains(r#"<div hx-sse:connect="/deployments/9/events" hx-swap="none"></div>"#));
    assert!(html.contains(&format!(
        "<pre class=\"commit-message\">{XSS_ESCAPED}\n\nThe body, &#60;b&#62;not bold&#60;/b&#62;.</pre>"
    )));
    assert!(html.contains(r#"<div id="log" class="log">"#) && html.contains(r#"id="line-3""#));
    assert!(html.contains(r#"<li class="stage sg-running"><span class="sg-name">build</span> <span class="sg-word">running</span></li>"#));
    assert!(html.contains(r#"<li class="stage sg-waiting"><span class="sg-name">install</span> <span class="sg-word">waiting</span></li>"#));
    assert!(!html.contains(XSS) && !html.contains("hx-swap-oob"));
    assert_eq!(count(&html, "<script"), 2);
    snapshot("deployment", &html);

    // A settled deployment cannot change: its page opens no stream.
    let done = fixture(10, Status::Failed, "x");
    let html = views::deployment_page(&site(), &done, &[], &[]).unwrap();
    assert!(!html.contains("hx-sse:connect"));
}
