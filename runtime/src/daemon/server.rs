//! The HTTP server loop: `axum`'s router on `hyper`'s connection builder, with what
//! `axum::serve` does not set — a connection cap, and a timeout for a request's headers
//! that also closes a keep-alive connection left idle (hyper runs it whenever it waits for
//! the next request's head). The peer address reaches handlers as `ConnectInfo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    // Each connection holds a receiver; when all are dropped, every connection is done.
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    loop {
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
        let done = done_rx.clone();
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            // WebSockets over HTTP/2 need the CONNECT protocol.
            builder.http2().enable_connect_protocol();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
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
            drop((permit, done));
        });
    }
    drop(done_rx);
    // Wait for the connections to finish their requests.
    done_tx.closed().await;
    Ok(())
}
