//! The HTTP listener. Every connection is bounded: in number (past
//! `max_connections` a client gets a `503` and the socket is closed), in
//! the time it may take to send a request's headers, in the time a request
//! body may stall between bytes, and in how long it may sit idle with no
//! request in flight. A connection holds only hyper's buffers while it
//! waits, so thousands of idle clients cost the host little and cannot
//! exhaust its memory.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// How long a connection being shut down may take to finish its last
/// response before it is closed.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How connections are bounded; `weft serve` flags set them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections served at once; past it a client gets `503`.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time a connection may sit with no request in flight and no bytes
    /// moving before it is closed.
    pub idle_timeout: Duration,
    /// Time a request body may stall between two chunks.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Live connection counts for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicUsize,
    pub refused: AtomicU64,
    pub idle_closed: AtomicU64,
}

/// Binds `addr` with a listen backlog of [`BACKLOG`], so a burst of
/// connects waits in the kernel's queue instead of being reset.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets each
/// connection finish its response in flight (at most [`CLOSE_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or a transient error): back off
                // instead of spinning on a listener that stays readable.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = Connection {
                    router: router.clone(),
                    limits,
                    stats: stats.clone(),
                    stop: stop.clone(),
                };
                connections.spawn(async move {
                    connection.serve(stream).await;
                    drop(permit);
                });
            }
            Err(_) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                connections.spawn(refuse(stream, limits.max_connections));
            }
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(CLOSE_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("closing connections still busy after the shutdown grace");
    }
    Ok(())
}

/// Answers a connection over the limit with a `503` problem and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        r#"{{"type":"https://weft.dev/problems/too-many-connections","title":"Service Unavailable","status":503,"detail":"the server has {max} connections open, its limit; retry shortly"}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    /// Cancelled when the server shuts down.
    stop: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let Self {
            router,
            limits,
            stats,
            stop,
        } = self;
        let _ = stream.set_nodelay(true);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let in_flight = activity.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = in_flight.begin_request();
            let request = request.map(|body| {
                axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body))
            });
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(guard);
                response
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        // No HTTP/2 keep-alive pings: they would count as activity and keep
        // an idle connection open.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(64);
        let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let idle_at = activity.idle_deadline(activity.idle_timeout(&limits));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended");
                    }
                    break;
                }
                () = stop.cancelled(), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                () = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                    if activity.is_idle(activity.idle_timeout(&limits)) {
                        stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                () = tokio::time::sleep_until(closing.unwrap_or_else(tokio::time::Instant::now)), if closing.is_some() => break,
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved bytes, and how many of its requests are
/// being handled: it is idle when neither has happened for a while.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last read or write.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Until its first request a connection has the header timeout: one
    /// that connects and sends nothing is let go as soon as one that sends
    /// half a request.
    fn idle_timeout(&self, limits: &Limits) -> Duration {
        if self.requests.load(Ordering::Relaxed) == 0 {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        }
    }

    /// When the connection becomes idle if nothing happens before then.
    fn idle_deadline(&self, timeout: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(self.started + last + timeout)
    }

    fn is_idle(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.started.elapsed()
                >= Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

/// A request being handled; dropped when its response is ready (a
/// streamed body then counts as activity through its bytes).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes last moved.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
