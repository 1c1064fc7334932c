//! The `selfdeploy` binary: parse the settings, take the listening socket, run the library,
//! and become the new release when a self-deploy asks for it.

use clap::Parser;
use selfdeploy::Settings;
use selfdeploy::restart::{self, Exit};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status for a setting that cannot be used (as clap uses for bad flags).
const EXIT_BAD_SETTING: u8 = 2;
/// How long background tasks get to stop before an exec, in milliseconds.
const RUNTIME_STOP_MS: u64 = 500;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "selfdeploy=info,tower_http=warn".into()),
        )
        .init();
    let settings = Settings::parse();
    let check = settings.check;
    let config = match settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if check {
        return match runtime.block_on(restart::check_mode(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("check failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Taking an inherited socket edits the environment; nothing else reads it meanwhile.
    let (listener, inherited) = match selfdeploy::socket::take_or_bind(config.listen) {
        Ok(taken) => taken,
        Err(e) => {
            eprintln!("error: invalid setting `listen`: {e:#}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
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
    runtime.shutdown_timeout(Duration::from_millis(RUNTIME_STOP_MS));
    match result {
        Ok(Exit::Stopped) => ExitCode::SUCCESS,
        Ok(Exit::Exec {
            executable,
            release,
            listener,
        }) => {
            tracing::info!("becoming release {release}");
            let error = restart::exec_into(&executable, &release, listener);
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
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
