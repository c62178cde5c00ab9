//! Outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! The host lets a request through only to hosts the plugin is granted; any
//! other host fails with [`HttpError::Denied`], never a trap.
//!
//! ```no_run
//! use weft_sdk::http::{Request, send};
//! let response = send(&Request::get("https://api.example.com/v1/things"))?;
//! let things: weft_sdk::Value = response.json()?;
//! # Ok::<(), weft_sdk::http::HttpError>(())
//! ```

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Largest chunk `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK: usize = 4096;

/// An outbound request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST with a JSON body and `content-type: application/json`.
    pub fn post_json(url: &str, body: &serde_json::Value) -> Self {
        Self::new("POST", url)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Body(format!("response is not the expected JSON: {e}")))
    }
}

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL could not be parsed.
    InvalidUrl(String),
    /// The host refused the request: the plugin is not granted that host.
    Denied(String),
    /// The request failed in transit (DNS, connection, TLS, timeout).
    Transport(String),
    /// The body could not be written or read.
    Body(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid url: {m}"),
            Self::Denied(m) => write!(f, "request denied: {m}"),
            Self::Transport(m) => write!(f, "http transport error: {m}"),
            Self::Body(m) => write!(f, "http body error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::StepError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Transport(_) => crate::StepError::retryable(e.to_string()),
            HttpError::InvalidUrl(_) => crate::StepError::invalid_input(e.to_string()),
            HttpError::Denied(_) | HttpError::Body(_) => crate::StepError::fatal(e.to_string()),
        }
    }
}

/// The parts of a URL that wasi:http wants separately.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: String,
}

fn split_url(url: &str) -> Result<UrlParts<'_>, HttpError> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "{url:?} must start with http:// or https://"
        )));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("{url:?} has no host")));
    }
    let mut path_with_query = &rest[end..];
    if let Some(hash) = path_with_query.find('#') {
        path_with_query = &path_with_query[..hash];
    }
    let path_with_query = if path_with_query.starts_with('/') {
        path_with_query.to_owned()
    } else {
        format!("/{path_with_query}")
    };
    Ok(UrlParts {
        https,
        authority,
        path_with_query,
    })
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

fn error_code(e: ErrorCode) -> HttpError {
    match e {
        ErrorCode::HttpRequestDenied => {
            HttpError::Denied("the plugin is not granted this host".into())
        }
        other => HttpError::Transport(format!("{other:?}")),
    }
}

/// Sends a request and reads the whole response.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let parts = split_url(&request.url)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::InvalidUrl(format!("header {name:?}: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let scheme = if parts.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_method(&method(&request.method))
        .and_then(|()| outgoing.set_scheme(Some(&scheme)))
        .and_then(|()| outgoing.set_authority(Some(parts.authority)))
        .and_then(|()| outgoing.set_path_with_query(Some(&parts.path_with_query)))
        .map_err(|()| HttpError::InvalidUrl(format!("{:?} was refused", request.url)))?;
    let body = outgoing
        .body()
        .map_err(|()| HttpError::Body("request body unavailable".into()))?;

    let pending = outgoing_handler::handle(outgoing, None).map_err(error_code)?;

    // The body is written after `handle` (the host buffers little before
    // the request is sent); if writing fails, the response says why.
    let mut body_error = None;
    {
        let stream = body
            .write()
            .map_err(|()| HttpError::Body("request body stream unavailable".into()))?;
        for chunk in request
            .body
            .as_deref()
            .unwrap_or_default()
            .chunks(WRITE_CHUNK)
        {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                body_error = Some(HttpError::Body(format!("writing request body: {e:?}")));
                break;
            }
        }
    }
    if let Err(e) = OutgoingBody::finish(body, None) {
        body_error.get_or_insert(error_code(e));
    }

    let response = loop {
        if let Some(result) = pending.get() {
            break result
                .map_err(|()| HttpError::Transport("response already taken".into()))?
                .map_err(error_code)?;
        }
        pending.subscribe().block();
    };
    if let Some(e) = body_error {
        return Err(e);
    }

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Body("response body unavailable".into()))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Body("response body stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Body(format!(
                        "reading response body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_url_separates_scheme_authority_and_path() {
        let cases = [
            ("https://api.example.com", true, "api.example.com", "/"),
            ("http://h:8080/a/b?c=1#frag", false, "h:8080", "/a/b?c=1"),
            ("https://h?x=1", true, "h", "/?x=1"),
        ];
        for (url, https, authority, path) in cases {
            assert_eq!(
                split_url(url).unwrap(),
                UrlParts {
                    https,
                    authority,
                    path_with_query: path.to_owned()
                },
                "{url}"
            );
        }
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("https:///path").is_err());
    }
}
