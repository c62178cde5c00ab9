//! Outbound `wasi:http`: the gate every guest request passes (the
//! attempt's grants, then the operator's egress policy) and the sender that
//! makes the connection.
//!
//! The sender is ours, not wasmtime-wasi-http's `default_send_request`
//! (whose feature is off, so nothing can call it): that one connects to
//! whatever the name resolves to. Ours resolves the name once through
//! [`EgressPolicy::resolve`], connects only to an address it allows, and
//! speaks TLS with the name the guest asked for. Redirects are never
//! followed here: a guest that follows one sends a new request through this
//! same gate.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument as _;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::grants::Grants;
use super::sandbox::{LogBook, lock};
use crate::egress::{EgressError, EgressPolicy};

/// Lets an outbound request through only to a granted host, and only to an
/// address the operator's egress policy allows.
pub(crate) struct HttpGate {
    pub(crate) grants: Grants,
    pub(crate) egress: EgressPolicy,
    /// The attempt's log: a refusal is explained there, since the guest
    /// sees only `HTTP-request-denied`.
    pub(crate) log: Arc<Mutex<LogBook>>,
    /// The attempt's exported span, when traces are on: each request gets
    /// a child span and carries its `traceparent`.
    pub(crate) trace: Option<tracing::Span>,
}

/// A response whose body the guest reads, and the connection's own future.
type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16();
        if !self.grants.allows_host(&host, port) {
            lock(&self.log).push(
                "warn",
                format!("outbound request to {host} denied: the plugin is not granted this host"),
            );
            tracing::info!(%host, "outbound request denied");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        tracing::debug!(%host, "outbound request allowed");
        // Request-side errors reach the guest through the request itself.
        let _ = fut;
        let egress = self.egress.clone();
        let log = self.log.clone();
        let span = match &self.trace {
            Some(attempt) => request_span(attempt, &mut request),
            None => tracing::Span::none(),
        };
        Box::new(
            async move {
                let sent = send(request, options, egress, log).await;
                let span = tracing::Span::current();
                match &sent {
                    Ok((response, _)) => {
                        span.record(
                            "http.response.status_code",
                            i64::from(response.status().as_u16()),
                        );
                        if response.status().is_server_error() {
                            span.record("otel.status_code", "error");
                        }
                    }
                    Err(e) => {
                        span.record("otel.status_code", "error");
                        span.record("otel.status_description", e.to_string());
                    }
                }
                let (response, io) = sent?;
                Ok((
                    response.map(BodyExt::boxed_unsync),
                    Box::new(io) as Box<dyn Future<Output = _> + Send>,
                ))
            }
            .instrument(span),
        )
    }
}

/// The span of an outbound request, a child of the attempt's; the request
/// gets its `traceparent` so the server it reaches joins the trace. It
/// lasts until the response's head arrives.
fn request_span(attempt: &tracing::Span, request: &mut http::Request<WasiBody>) -> tracing::Span {
    let uri = request.uri();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    // No query: it may hold credentials.
    let url = format!(
        "{}://{}{}",
        if tls { "https" } else { "http" },
        uri.authority().map_or("", http::uri::Authority::as_str),
        uri.path()
    );
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        parent: attempt,
        "http.client.request",
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = uri.host().unwrap_or_default(),
        server.port = i64::from(uri.port_u16().unwrap_or(if tls { 443 } else { 80 })),
        url.full = url,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if let Some(value) =
        crate::telemetry::traceparent_of(&span).and_then(|t| http::HeaderValue::from_str(&t).ok())
    {
        request.headers_mut().insert("traceparent", value);
    }
    span
}

/// A byte stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// The guest's timeouts, with wasmtime-wasi-http's default for any unset.
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn of(options: Option<RequestOptions>) -> Self {
        const DEFAULT: Duration = Duration::from_secs(600);
        Self {
            connect: options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT),
            first_byte: options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(DEFAULT),
            // Tokio panics on an interval of zero.
            between_bytes: options
                .and_then(|o| o.between_bytes_timeout)
                .unwrap_or(DEFAULT)
                .max(Duration::from_nanos(1)),
        }
    }
}

/// Sends `request` over a new HTTP/1.1 connection to an address `egress`
/// allows (from wasmtime-wasi-http 48's `default_send_request`, with the
/// address checked and the name kept for TLS).
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    egress: EgressPolicy,
    log: Arc<Mutex<LogBook>>,
) -> Result<
    (
        http::Response<TimedBody>,
        impl Future<Output = Result<(), Error>> + Send,
    ),
    Error,
> {
    let timeouts = Timeouts::of(options);
    let uri = request.uri();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });

    let addrs = match tokio::time::timeout(timeouts.connect, egress.resolve(&host, port)).await {
        Err(_) => return Err(Error::DnsTimeout),
        Ok(Ok(addrs)) => addrs,
        Ok(Err(EgressError::Refused(refused))) => {
            lock(&log).push("warn", format!("outbound request to {host} {refused}"));
            tracing::info!(%host, ip = %refused.ip, "outbound request refused by the egress policy");
            return Err(Error::HttpRequestDenied);
        }
        Ok(Err(e)) => {
            return Err(Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            });
        }
    };
    let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(&addrs[..])).await
    {
        Ok(stream) => stream.map_err(Error::Connect)?,
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let stream: Box<dyn Stream> = if tls {
        Box::new(tls_connect(&host, stream).await?)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries only the path: scheme and authority are for
    // proxies.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(
            request
                .uri()
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str),
        )
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let between_bytes = timeouts.between_bytes;
    let send = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        let mut timeout = tokio::time::interval(between_bytes);
        timeout.reset();
        Ok::<_, Error>(response.map(|incoming| TimedBody { incoming, timeout }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Drive the connection while waiting for the response.
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(io) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(io).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    Ok((response, async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| {
            if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }
        })
    }))
}

/// TLS over `stream`, verified against the web PKI for `host` (the name
/// the guest asked for, or its IP literal).
async fn tls_connect(
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    use rustls::pki_types::ServerName;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        Err(_) => ServerName::try_from(bare.to_owned()).map_err(|e| Error::DnsError {
            rcode: Some(format!("{bare:?} is not a valid DNS name: {e}")),
            info_code: None,
        })?,
    };
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

/// A response body that fails when no bytes arrive for `between_bytes`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
