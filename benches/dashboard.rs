//! Benchmark of the dashboard over a long history: 10,000 deployments in a real SQLite
//! file, then the index page (first, middle and last page), a deployment page, and the
//! first message (the full-table resync) of a new `/events` stream, each requested over
//! real HTTP many times. Reports p50, p99 and max latency per kind and the process's
//! resident memory before and after. Run: `cargo bench --bench dashboard` (figures in
//! docs/BENCHMARKS.md). Settings: BENCH_ROWS (default 10000), BENCH_REQUESTS (per kind,
//! default 200).

#[allow(dead_code)]
#[path = "../tests/dashboard/support.rs"]
mod support;

use selfdeploy::db;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| {
        let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
        samples[rank].as_secs_f64() * 1000.0
    };
    println!(
        "{what:<34} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        at(50.0),
        at(99.0),
        at(100.0)
    );
}

#[tokio::main]
async fn main() {
    let rows = env_or("BENCH_ROWS", 10_000);
    let requests = env_or("BENCH_REQUESTS", 200);
    let app = support::start_app(|s| s.max_event_streams = Some(requests + 1)).await;
    let rss_empty = rss_kib();
    let mut tx = app.state.db.begin().await.unwrap();
    let mut last = None;
    for n in 1..=rows {
        let d = support::new_deployment(&format!("commit number {n}\n\nwith a body"));
        last = Some(db::insert_deployment(&mut tx, &d).await.unwrap());
    }
    tx.commit().await.unwrap();
    let last = last.expect("at least one row");
    let pages = rows
        .div_ceil(selfdeploy::dashboard::PER_PAGE as usize)
        .max(1);
    println!("{rows} deployments, {pages} pages; {requests} requests of each kind");

    let paths = [
        ("GET / (page 1)".to_string(), "/".to_string()),
        (
            format!("GET /?page={}", pages / 2),
            format!("/?page={}", pages / 2),
        ),
        (format!("GET /?page={pages}"), format!("/?page={pages}")),
        (
            "GET /deployments/{id}".to_string(),
            format!("/deployments/{last}"),
        ),
    ];
    for (what, path) in &paths {
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            let resp = app.get(path).await;
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.bytes().await.unwrap();
            samples.push(started.elapsed());
        }
        report(what, samples);
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let mut stream = app.open_stream("/events").await;
        let first = stream.message().await;
        assert!(first.contains("deploys-body"), "a resync first");
        samples.push(started.elapsed());
    }
    report("GET /events, first message", samples);
    println!(
        "resident memory: {} KiB with an empty table, {} KiB after",
        rss_empty,
        rss_kib()
    );
}
