//! Benchmark of the `exec` self-restart under load: 10 self-deploys in a row while a
//! fixed-rate load (half on kept-alive connections, half on new ones) requests `/version`.
//! Reports failed requests, latency percentiles inside the switch windows and overall,
//! whether the PID stayed and `/version` changed each time. Run: `cargo bench --bench
//! self_restart` (figures in docs/BENCHMARKS.md). Settings: BENCH_RPS (default 200),
//! BENCH_DEPLOYS (default 10), BENCH_GAP_MS (pause after each deploy, default 1000, so
//! the load also runs outside switch windows).
//!
//! Releases are built by a `build.sh` in each pushed commit that installs a launcher of the
//! server binary cargo built, so what is measured is the switch, not a compiler.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_selfdeploy");

struct Sample {
    sent: Instant,
    latency: Duration,
    ok: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let rps: u64 = std::env::var("BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let deploys: usize = std::env::var("BENCH_DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (repo, _) = FixtureRepo::create(root, "unused");
    let mut envs = server_envs(root, "sh build.sh");
    envs.push(("RUST_LOG", "warn".to_string()));
    let server = ServerProcess::start(&envs);
    server.wait_healthy().await;
    let pid = server.child.id() as u64;
    let base = server.url("");
    let client = reqwest::Client::new();

    // Fixed-rate load: every 1/rps a request is started, alternating a kept-alive client
    // and a fresh connection; each request is its own task, so a slow one never delays
    // the schedule.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (samples, stop, url) = (samples.clone(), stop.clone(), format!("{base}/version"));
        tokio::spawn(async move {
            let kept = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rps));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            let mut inflight = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let client = if n.is_multiple_of(2) {
                    kept.clone()
                } else {
                    reqwest::Client::builder()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap()
                };
                let (samples, url) = (samples.clone(), url.clone());
                inflight.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let result = client
                        .get(&url)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let ok = matches!(&result, Ok(r) if r.status().is_success());
                    if let Err(e) = &result {
                        eprintln!("request failed: {e:?}");
                    }
                    samples.lock().unwrap().push(Sample {
                        sent,
                        latency: sent.elapsed(),
                        ok,
                    });
                }));
            }
            for task in inflight {
                let _ = task.await;
            }
        })
    };

    let gap = Duration::from_millis(
        std::env::var("BENCH_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let mut windows = Vec::new();
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    let mut versions = Vec::new();
    let started = Instant::now();
    for n in 1..=deploys {
        let sha = repo.commit_files(
            &[(
                "build.sh",
                &release_launcher(&format!("# release {n}\nexec {BIN} \"$@\"")),
            )],
            &format!("release {n}"),
        );
        let asked = Instant::now();
        let res = push_to(&client, &base, &sha, &format!("release {n}")).await;
        answers.push(asked.elapsed());
        assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
        let id = res.json::<Value>().await.unwrap()["deployment_id"]
            .as_i64()
            .unwrap();
        ids.push(id);
        // The switch window: from the restart stage's start until the new process serves.
        let restart_seen = eventually(Duration::from_secs(120), "the restart stage", || {
            let req = client.get(format!("{base}/api/deployments/{id}")).send();
            async move {
                let d: Value = req.await.ok()?.json().await.ok()?;
                (d["stage"] == "restart" || d["status"] == "deployed").then(Instant::now)
            }
        })
        .await;
        eventually(
            Duration::from_secs(120),
            "the deployment to be live",
            || {
                let req = client.get(format!("{base}/api/deployments/{id}")).send();
                async move {
                    let d: Value = req.await.ok()?.json().await.ok()?;
                    assert!(d["status"] != "failed", "{d}");
                    (d["status"] == "deployed").then_some(())
                }
            },
        )
        .await;
        let live = Instant::now();
        windows.push((
            restart_seen - Duration::from_millis(200),
            live + Duration::from_millis(200),
        ));
        let version: Value = client
            .get(format!("{base}/version"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            version["commit"],
            sha.as_str(),
            "/version changed to the new commit"
        );
        assert_eq!(version["pid"], pid, "the PID stayed");
        versions.push(version["release"].as_str().unwrap().to_string());
        eprintln!(
            "deploy {n}/{deploys}: {} live after {:.2} s",
            versions.last().unwrap(),
            (live - restart_seen).as_secs_f64()
        );
        tokio::time::sleep(gap).await;
    }
    let total = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let failed = samples.iter().filter(|s| !s.ok).count();
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort();
    let mut in_window: Vec<Duration> = samples
        .iter()
        .filter(|s| windows.iter().any(|(a, b)| s.sent >= *a && s.sent <= *b))
        .map(|s| s.latency)
        .collect();
    in_window.sort();
    let switch_secs: f64 = windows.iter().map(|(a, b)| (*b - *a).as_secs_f64()).sum();
    println!(
        "self-deploys: {deploys} in {:.1} s at {rps} requests/s (half kept-alive, half new connections)",
        total.as_secs_f64()
    );
    println!("requests: {} sent, {failed} failed", samples.len());
    println!(
        "inside the switch windows ({:.1} s in all, {} requests): p50 {} p99 {} max {}",
        switch_secs,
        in_window.len(),
        ms(percentile(&in_window, 50.0)),
        ms(percentile(&in_window, 99.0)),
        ms(*in_window.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "all requests: p50 {} p99 {} max {}",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(*all.last().unwrap_or(&Duration::ZERO))
    );
    // Pick-up latency: from the webhook's answer (received_at) to the worker taking the
    // deployment (started_at), each push arriving at an idle server.
    let mut pickups = Vec::new();
    for id in &ids {
        let d: Value = client
            .get(format!("{base}/api/deployments/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (received, started) = (
            d["received_at"].as_i64().unwrap(),
            d["started_at"].as_i64().unwrap(),
        );
        pickups.push(Duration::from_millis((started - received).max(0) as u64));
    }
    pickups.sort();
    answers.sort();
    println!(
        "webhook answered (signed push, 202): p50 {} max {}",
        ms(percentile(&answers, 50.0)),
        ms(*answers.last().unwrap())
    );
    println!(
        "pick-up (webhook to running, idle server): p50 {} max {}",
        ms(percentile(&pickups, 50.0)),
        ms(*pickups.last().unwrap())
    );
    let distinct: std::collections::HashSet<_> = versions.iter().collect();
    println!(
        "PID unchanged: {pid} throughout; /version changed each time: {}",
        distinct.len() == deploys
    );
    assert_eq!(failed, 0, "no request may fail");
}
