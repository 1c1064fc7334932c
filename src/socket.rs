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
