//! The HTTP server loop: `axum`'s router on `hyper`'s HTTP/1.1 connections, with what
//! `axum::serve` does not set — a connection cap, and a timeout for a request's headers
//! that also closes a connection that sends nothing, or a keep-alive connection left idle
//! (hyper runs it whenever it waits for a request's head, the first one included). HTTP/1.1
//! only: cleartext HTTP/2 would need a protocol sniff without a timeout of its own, and
//! browsers, WebSockets and the clients we test with speak HTTP/1.1 to a plain listener (a
//! TLS-terminating proxy in front may speak HTTP/2 to clients). The peer address reaches
//! handlers as `ConnectInfo`. A WebSocket leaves the count when it is upgraded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

/// `[http]`: limits of the API server.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// How long a client may take to send a request's headers, and how long a keep-alive
    /// connection may wait idle for its next request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait in the listener's backlog.
    pub connections_max: usize,
}

impl Default for HttpSection {
    /// 10 s for headers (and idleness), 1,024 connections.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            connections_max: 1024,
        }
    }
}

impl HttpSection {
    /// Checks every value.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.header_read_timeout < Duration::from_millis(100)
            || self.header_read_timeout > Duration::from_secs(600)
        {
            return Err((
                "http.header_read_timeout",
                "must be between 100 ms and 10 min".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.connections_max) {
            return Err(("http.connections_max", "must be 1..=1000000".into()));
        }
        Ok(())
    }
}

/// Serves `app` on `listener` with `limits` until `stop`; then lets open connections finish
/// their requests (the caller bounds how long).
///
/// # Errors
/// None today: failures to accept are logged and retried.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpSection,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    // The connections: aborted with this future (when the daemon's drain runs out).
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections, so the set stays as large as what is open.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let app = app.clone();
                async move {
                    use tower::ServiceExt as _;
                    app.oneshot(req.map(axum::body::Body::new)).await
                }
            });
        let stop = stop.clone();
        let timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(error = %e, "connection ended");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    // New connections are refused from now on; the open ones finish their requests.
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}
