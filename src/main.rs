//! The `selfdeploy` binary: parse the settings, take the listening socket, run the library.

use clap::Parser;
use selfdeploy::Settings;
use std::process::ExitCode;

/// Exit status for a setting that cannot be used (as clap uses for bad flags).
const EXIT_BAD_SETTING: u8 = 2;

fn main() -> ExitCode {
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
    // Before the runtime starts threads: taking an inherited socket edits the environment.
    let (listener, inherited) = match selfdeploy::socket::take_or_bind(config.listen) {
        Ok(taken) => taken,
        Err(e) => {
            eprintln!("error: invalid setting `listen`: {e:#}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let how = if inherited {
            "inherited socket"
        } else {
            "bound"
        };
        tracing::info!("listening on http://{} ({how})", listener.local_addr()?);
        selfdeploy::run(config, listener, shutdown_signal()).await
    });
    match result {
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
