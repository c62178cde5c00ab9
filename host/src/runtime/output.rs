//! Guest stdout and stderr, captured into the attempt's log with a byte cap.
//! Writes past the cap are accepted and dropped, never an error: a chatty
//! guest must not fail because of its own logging.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::sandbox::{LogBook, lock};

#[derive(Clone)]
pub(crate) struct CappedOutput {
    log: Arc<Mutex<LogBook>>,
    stream: &'static str,
    /// Bytes of a line not yet ended by a newline.
    partial: Arc<Mutex<Vec<u8>>>,
}

/// A line longer than this is split.
const MAX_LINE: usize = 4096;

impl CappedOutput {
    pub(crate) fn new(log: Arc<Mutex<LogBook>>, stream: &'static str) -> Self {
        Self {
            log,
            stream,
            partial: Arc::default(),
        }
    }

    fn accept(&self, bytes: &[u8]) {
        let mut partial = lock(&self.partial);
        for &b in bytes {
            if b == b'\n' || partial.len() >= MAX_LINE {
                let line = String::from_utf8_lossy(&partial).into_owned();
                lock(&self.log).push(self.stream, line);
                partial.clear();
                if b == b'\n' {
                    continue;
                }
            }
            partial.push(b);
        }
    }

    /// Writes out a line left without a trailing newline.
    pub(crate) fn flush_partial(&self) {
        let mut partial = lock(&self.partial);
        if !partial.is_empty() {
            let line = String::from_utf8_lossy(&partial).into_owned();
            lock(&self.log).push(self.stream, line);
            partial.clear();
        }
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
