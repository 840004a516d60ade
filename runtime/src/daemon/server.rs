//! The HTTP server loop: `axum`'s router on `hyper`'s HTTP/1.1 connections, with what
//! `axum::serve` does not set — a connection cap, and a timeout for a request's headers
//! that also closes a connection that sends nothing, or a keep-alive connection left idle
//! (hyper runs it whenever it waits for a request's head, the first one included). HTTP/1.1
//! only: cleartext HTTP/2 would need a protocol sniff without a timeout of its own, and
//! browsers, WebSockets and the clients we test with speak HTTP/1.1 to a plain listener (a
//! TLS-terminating proxy in front may speak HTTP/2 to clients). The peer address reaches
//! handlers as `ConnectInfo`. A connection's place in the count goes with its socket, so an
//! upgraded WebSocket keeps it until it closes. A request body has a deadline of its own
//! (`body_read_timeout`, from the request's arrival), so a client cannot hold a handler by
//! sending its body a byte at a time.

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    /// Open connections at most, upgraded WebSockets included; more wait in the listener's
    /// backlog.
    pub connections_max: usize,
    /// How long a client may take to send a request's body, from the request's arrival.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

impl Default for HttpSection {
    /// 10 s for headers (and idleness), 1,024 connections, 60 s for a body.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            connections_max: 1024,
            body_read_timeout: Duration::from_secs(60),
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
        if self.body_read_timeout < Duration::from_secs(1)
            || self.body_read_timeout > Duration::from_secs(3600)
        {
            return Err((
                "http.body_read_timeout",
                "must be between 1 s and 1 h".into(),
            ));
        }
        Ok(())
    }
}

/// A connection's socket with its place in the count: the place is given back when the
/// socket closes, also after a WebSocket upgrade took it over.
struct Counted {
    tcp: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// A request body that fails when its deadline passes while it waits for more, and says so
/// in `passed` (the server then answers 408 whatever the handler made of the error).
struct Deadline {
    body: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    done: bool,
    passed: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            // What arrived in time is read whenever the handler reads it; only waiting for
            // more is bounded.
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                this.passed
                    .store(true, std::sync::atomic::Ordering::Release);
                Poll::Ready(Some(Err(format!(
                    "the request body was not received within {:?}",
                    this.timeout
                )
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
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
        let body_timeout = limits.body_read_timeout;
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let app = app.clone();
                async move {
                    use axum::response::IntoResponse as _;
                    use tower::ServiceExt as _;
                    let passed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let req = req.map(|body| {
                        axum::body::Body::new(Deadline {
                            body,
                            deadline: Box::pin(tokio::time::sleep(body_timeout)),
                            timeout: body_timeout,
                            done: false,
                            passed: passed.clone(),
                        })
                    });
                    let response = app.oneshot(req).await;
                    if passed.load(std::sync::atomic::Ordering::Acquire) {
                        let mut timed_out = super::http::Problem::new(
                            axum::http::StatusCode::REQUEST_TIMEOUT,
                            format!("the request body was not received within {body_timeout:?}"),
                        )
                        .into_response();
                        timed_out.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                        return Ok(timed_out);
                    }
                    response
                }
            });
        let stop = stop.clone();
        let timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(
                    TokioIo::new(Counted {
                        tcp,
                        _place: permit,
                    }),
                    service,
                )
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
        });
    }
    // New connections are refused from now on; the open ones finish their requests.
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}
