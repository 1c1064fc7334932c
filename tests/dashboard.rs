//! The live dashboard: rendered markup (`render`, snapshots in tests/snapshots/, rewritten
//! with `UPDATE_SNAPSHOTS=1`), its event streams over real HTTP, the password, the stream
//! cap, shutdown, and a real browser following a deployment (`browser`, driving
//! tests/browser/dashboard.mjs).

#[path = "dashboard/browser.rs"]
mod browser;
#[path = "dashboard/render.rs"]
mod render;
#[path = "dashboard/support.rs"]
mod support;

use selfdeploy::db;
use selfdeploy::events::Event;
use selfdeploy::logs::{LogWriter, Redactor, Stream};
use selfdeploy::status::Status;
use support::{XSS, XSS_ESCAPED, count, eventually, manifest_dir, start_app};

/// Asserts a message is the index resync and returns it.
fn assert_index_resync(msg: &str) {
    assert!(
        msg.starts_with(r#"<tbody id="deploys-body" hx-swap-oob="true">"#),
        "{msg}"
    );
    assert!(
        msg.contains(r#"<nav id="pager" class="pager" aria-label="Pages" hx-swap-oob="true">"#)
    );
    assert!(msg.contains(
        r#"<section id="serving" class="serving" aria-label="Serving now" hx-swap-oob="true">"#
    ));
}

#[tokio::test]
async fn index_stream_carries_row_swaps_in_order() {
    let app = start_app(|_| {}).await;
    let mut events = app.open_stream("/events").await;
    assert_eq!(events.headers["content-type"], "text/event-stream");
    assert_eq!(events.headers["x-accel-buffering"], "no");
    let first = events.message().await;
    assert_index_resync(&first);
    assert!(
        first.contains("No deployments here yet") && first.contains("No deployment is serving yet")
    );

    let id = app.create(XSS).await;
    let created = events.message().await;
    assert_index_resync(&created);
    assert!(
        created.contains(&format!(r#"<tr id="deploy-{id}" class="st-queued">"#)),
        "{created}"
    );
    assert!(created.contains(XSS_ESCAPED) && !created.contains(XSS));

    // Log lines are not for this stream.
    let mut log = LogWriter::new(
        app.state.db.clone(),
        app.state.events.clone(),
        id,
        Redactor::default(),
    );
    log.line(Stream::Stdout, "building").await;

    app.transition(id, Status::Queued, Status::Running, None)
        .await;
    let running = events.message().await;
    assert!(
        running.starts_with(&format!(
            r#"<tr id="deploy-{id}" class="st-running" hx-swap-oob="true">"#
        )),
        "{running}"
    );
    assert!(!running.contains("deploys-body") && !running.contains("id=\"serving\""));

    app.deploy(id).await;
    let deployed = events.message().await;
    assert!(
        deployed.starts_with(&format!(
            r#"<tr id="deploy-{id}" class="st-deployed" hx-swap-oob="true">"#
        )),
        "{deployed}"
    );
    let panel = &deployed[deployed
        .find(r#"<section id="serving""#)
        .expect("serving panel")..];
    let d = db::get(&app.state.db, id).await.unwrap().unwrap();
    assert!(
        panel.contains(d.short_sha()) && panel.contains(XSS_ESCAPED),
        "{panel}"
    );

    // A reconnect starts from the table as it is now.
    let mut again = app.open_stream("/events").await;
    let resync = again.message().await;
    assert_index_resync(&resync);
    assert!(resync.contains(&format!(r#"<tr id="deploy-{id}" class="st-deployed">"#)));
}

#[tokio::test]
async fn index_stream_resyncs_after_lag() {
    let app = start_app(|_| {}).await;
    let id = app.create("first").await;
    let mut events = app.open_stream("/events").await;
    assert_index_resync(&events.message().await);
    let d = db::get(&app.state.db, id).await.unwrap().unwrap();
    // On this single-threaded test runtime the stream cannot run during the loop, so its
    // receiver falls behind the channel's capacity.
    for _ in 0..selfdeploy::events::CHANNEL_CAPACITY + 10 {
        app.state
            .events
            .publish(Event::Deployment(Box::new(d.clone())));
    }
    let msg = events.message().await;
    assert_index_resync(&msg);
    assert!(msg.contains(&format!(r#"<tr id="deploy-{id}" class="st-queued">"#)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_stream_sends_each_log_line_once() {
    let app = start_app(|_| {}).await;
    let id = app.create("Build with logs").await;
    let other = app.create("Another one").await;
    app.transition(id, Status::Queued, Status::Running, None)
        .await;
    let mut log = LogWriter::new(
        app.state.db.clone(),
        app.state.events.clone(),
        id,
        Redactor::default(),
    );
    for n in 1..=5 {
        log.line(Stream::Stdout, &format!("line {n} <b>")).await;
    }

    let page = app.get(&format!("/deployments/{id}")).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!(r#"hx-sse:connect="/deployments/{id}/events""#)));
    assert!(page.contains(r#"<div id="line-5" class="ln ln-stdout">line 5 &#60;b&#62;</div>"#));

    // Lines keep coming while the stream connects: none may be lost or repeated.
    let writer = tokio::spawn(async move {
        for n in 6..=60 {
            log.line(Stream::Stderr, &format!("line {n}")).await;
            tokio::task::yield_now().await;
        }
        log
    });
    let mut noise = LogWriter::new(
        app.state.db.clone(),
        app.state.events.clone(),
        other,
        Redactor::default(),
    );
    noise.line(Stream::Stdout, "not this deployment").await;
    let mut events = app.open_stream(&format!("/deployments/{id}/events")).await;
    let first = events.message().await;
    assert!(
        first.starts_with(
            r#"<section id="deploy-head" class="deploy-head st-running" hx-swap-oob="true">"#
        ),
        "{first}"
    );
    assert!(first.contains(r#"<div id="log" class="log" hx-swap-oob="true">"#));
    let mut seen = first.clone();
    let mut log = writer.await.unwrap();
    while !seen.contains(r#"id="line-60""#) {
        let msg = events.message().await;
        assert!(
            msg.starts_with(r#"<div hx-swap-oob="beforeend:#log">"#),
            "{msg}"
        );
        seen.push_str(&msg);
    }
    for n in 1..=60 {
        assert_eq!(
            count(&seen, &format!(r#"id="line-{n}""#)),
            1,
            "line {n} in {seen}"
        );
    }
    assert!(!seen.contains("not this deployment"));

    // A status change replaces the header, reason in a <pre>.
    log.line(Stream::Selfdeploy, "giving up").await;
    app.transition(
        id,
        Status::Running,
        Status::Failed,
        Some("build failed:\n<oops>"),
    )
    .await;
    let mut rest = String::new();
    while !rest.contains("deploy-head") {
        rest.push_str(&events.message().await);
    }
    assert!(
        rest.contains(r#"<div id="line-61" class="ln ln-selfdeploy">giving up</div>"#),
        "{rest}"
    );
    assert!(rest.contains(
        r#"<section id="deploy-head" class="deploy-head st-failed" hx-swap-oob="true">"#
    ));
    assert!(rest.contains("<pre class=\"reason\">build failed:\n&#60;oops&#62;</pre>"));

    // Each message's id is the last line the page then has, as htmx sends it back.
    assert_eq!(events.last_id.as_deref(), Some("61"));

    // A fresh connect (a reloaded page) replaces the whole log: still each line once.
    let mut again = app.open_stream(&format!("/deployments/{id}/events")).await;
    let resync = again.message().await;
    for n in 1..=61 {
        assert_eq!(count(&resync, &format!(r#"id="line-{n}""#)), 1, "line {n}");
    }
    assert_eq!(again.last_id.as_deref(), Some("61"));

    // A reconnect with `Last-Event-ID` resumes after that line: the header, then only the
    // lines the page lacks, appended.
    let events_url = app.url(&format!("/deployments/{id}/events"));
    let reconnect = async |last_event_id: &str| {
        let request = app.client.get(&events_url);
        let request = request.header("last-event-id", last_event_id);
        request.send().await.unwrap()
    };
    let resumed = reconnect("58").await;
    assert_eq!(resumed.status(), 200);
    let mut resumed = support::SseReader::new(resumed);
    let first = resumed.message().await;
    assert!(first.contains(r#"<section id="deploy-head""#), "{first}");
    assert!(
        first.contains(r#"<div hx-swap-oob="beforeend:#log">"#),
        "{first}"
    );
    assert!(
        !first.contains(r#"<div id="log""#),
        "the log is not replaced: {first}"
    );
    for n in 1..=58 {
        assert!(
            !first.contains(&format!(r#"id="line-{n}""#)),
            "line {n} again"
        );
    }
    for n in 59..=61 {
        assert_eq!(count(&first, &format!(r#"id="line-{n}""#)), 1, "line {n}");
    }
    assert_eq!(resumed.last_id.as_deref(), Some("61"));
    assert_eq!(reconnect("yesterday").await.status(), 400);

    let missing = app.get("/deployments/999999").await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(app.get("/deployments/999999/events").await.status(), 404);
    let bad = app.get("/deployments/abc").await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("Deployment ids are whole numbers.")
    );
    assert_eq!(app.get("/deployments/abc/events").await.status(), 400);
}

#[tokio::test]
async fn dashboard_password_is_required_when_set() {
    let app = start_app(|s| s.dashboard_password = Some("open sesame".into())).await;
    let id = app.create("guarded").await;
    for path in [
        "/".to_string(),
        "/?page=1".into(),
        "/events".into(),
        format!("/deployments/{id}"),
        format!("/deployments/{id}/events"),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), 401, "{path} without a password");
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(r#"Basic realm="selfdeploy""#),
            "{challenge}"
        );
        let wrong = app
            .client
            .get(app.url(&path))
            .basic_auth("admin", Some("open sesam"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
        let right = app
            .client
            .get(app.url(&path))
            .basic_auth("anyone", Some("open sesame"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path} with the password");
    }
    // Not under the password: the webhook's neighbours, the API and the static files.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/api/deployments").await.status(), 200);
    assert_eq!(app.get(selfdeploy::dashboard::HTMX_URL).await.status(), 200);
}

#[tokio::test]
async fn event_streams_are_capped() {
    let app = start_app(|s| s.max_event_streams = Some(2)).await;
    let id = app.create("capped").await;
    let mut a = app.open_stream("/events").await;
    a.message().await;
    let mut b = app.open_stream(&format!("/deployments/{id}/events")).await;
    b.message().await;
    let refused = app.get("/events").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        app.get(&format!("/deployments/{id}/events")).await.status(),
        503
    );
    // Pages themselves are not streams.
    assert_eq!(app.get("/").await.status(), 200);

    // A closed stream gives its slot back (noticed when the server next writes to it).
    drop(a);
    let app = &app;
    let mut c = eventually("a freed stream slot", || async move {
        app.state.publish_deployment(id).await;
        let resp = app.get("/events").await;
        (resp.status() == 200).then(|| support::SseReader::new(resp))
    })
    .await;
    assert_index_resync(&c.message().await);
    assert_eq!(
        app.state
            .event_streams
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn shutdown_ends_event_streams() {
    let app = start_app(|_| {}).await;
    let id = app.create("bye").await;
    let mut index = app.open_stream("/events").await;
    index.message().await;
    let mut deployment = app.open_stream(&format!("/deployments/{id}/events")).await;
    deployment.message().await;
    app.state.shutdown.cancel();
    // `next` panics if the body is still open after the deadline.
    assert_eq!(index.next().await, None);
    assert_eq!(deployment.next().await, None);
}

#[tokio::test]
async fn index_pages_are_paginated_over_many_rows() {
    let app = start_app(|_| {}).await;
    let mut tx = app.state.db.begin().await.unwrap();
    for n in 1..=10_000 {
        db::insert_deployment(
            &mut tx,
            &support::new_deployment(&format!("commit number {n}")),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // How fast these pages are is measured by `cargo bench --bench dashboard`.
    let first = app.get("/").await.text().await.unwrap();
    let last = app.get("/?page=200").await.text().await.unwrap();
    assert_eq!(count(&first, "<tr id=\"deploy-"), 50);
    assert!(
        first.find("commit number 10000<").unwrap() < first.find("commit number 9999<").unwrap()
    );
    assert!(
        first.contains("Page 1 of 200 · 10000 deployments") && first.contains(r#"href="/?page=2""#)
    );
    assert_eq!(count(&last, "<tr id=\"deploy-"), 50);
    assert!(last.contains("commit number 1<") && last.contains(r#"href="/?page=199""#));
    assert!(last.contains(r#"hx-sse:connect="/events?page=200""#));

    let beyond = app.get("/?page=201").await.text().await.unwrap();
    assert!(beyond.contains("No deployments here yet"));
    for bad in [
        "/?page=0",
        "/?page=-1",
        "/?page=abc",
        "/?page=99999999999999999999",
        "/events?page=x",
    ] {
        let resp = app.get(bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

#[tokio::test]
async fn static_files_are_embedded_and_immutable() {
    let app = start_app(|_| {}).await;
    let page = app.get("/").await.text().await.unwrap();
    let style = selfdeploy::dashboard::style_url();
    assert!(page.contains(&format!(r#"<link rel="stylesheet" href="{style}">"#)));
    let files = [
        (
            selfdeploy::dashboard::HTMX_URL,
            "static/htmx-4.0.1.min.js",
            "text/javascript",
        ),
        (
            selfdeploy::dashboard::HX_SSE_URL,
            "static/hx-sse-4.0.1.min.js",
            "text/javascript",
        ),
        (style, "static/style.css", "text/css; charset=utf-8"),
    ];
    for (url, file, content_type) in files {
        assert!(page.contains(url), "the page refers to {url}");
        let resp = app.get(url).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], content_type);
        assert_eq!(
            resp.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(manifest_dir().join(file)).unwrap(),
            "{url}"
        );
    }
    assert_eq!(
        app.get("/static/style.css").await.status(),
        404,
        "only the versioned URL"
    );
}
