//! The `selfdeploy` binary: parse the settings, bind the listener, run the library.

use clap::Parser;
use selfdeploy::Settings;
use std::process::ExitCode;

/// Exit status for a setting that cannot be used (as clap uses for bad flags).
const EXIT_BAD_SETTING: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "selfdeploy=info,tower_http=warn".into()),
        )
        .init();
    let config = match Settings::parse().resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "error: invalid setting `listen`: cannot listen on {}: {e}",
                config.listen
            );
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    tracing::info!("listening on http://{}", config.listen);
    match selfdeploy::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
