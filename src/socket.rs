//! The listening socket: inherited by the `LISTEN_FDS`/`LISTEN_PID` convention (systemd
//! socket activation, or this server's own exec hand-over), else bound from `listen`.

use anyhow::Context;
use std::net::{SocketAddr, TcpListener};

/// Takes the inherited socket if there is one, else binds `addr`. Call before any thread
/// starts: it clears `LISTEN_FDS`/`LISTEN_PID` so children do not inherit them.
pub fn take_or_bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, bool)> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(listener) = fds
        .take_tcp_listener(0)
        .context("the inherited socket (LISTEN_FDS) is not a TCP listener")?
    {
        return Ok((listener, true));
    }
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok((listener, false))
}

/// A listener that can stop accepting without closing: once `stop` is cancelled, new
/// connections wait in the kernel's backlog (for the next process) while the connections
/// already accepted are still served.
pub struct PausableListener {
    pub inner: tokio::net::TcpListener,
    pub stop: tokio_util::sync::CancellationToken,
}

/// Pause after a failed `accept` (e.g. too many open files), in milliseconds.
const ACCEPT_RETRY_MS: u64 = 50;

impl axum::serve::Listener for PausableListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => std::future::pending::<()>().await,
                accepted = self.inner.accept() => match accepted {
                    Ok(connection) => return connection,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
