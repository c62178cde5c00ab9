//! The state of one attempt's `Store`, and the host side of every import the
//! guest sees: `weft:plugin/host`, `wasi:keyvalue/store` (in kv.rs),
//! `wasi:http` (through `HttpGate`, in http_gate.rs) and an empty WASI.

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::weft::plugin::host::{self, LogLevel, Mail, Notification};
use super::grants::Grants;
use super::http_gate::HttpGate;
use super::limits::MemoryLimiter;
use super::output::CappedOutput;
use super::services::{OutgoingMail, OutgoingNotification, Services};
use super::{LogLine, StepContext};

/// Largest file `read-file` hands to a guest; bigger files are refused with
/// a message rather than truncated.
pub const MAX_FILE_BYTES: usize = 32 << 20;

pub(crate) struct Sandbox {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: HttpGate,
    pub(crate) limiter: MemoryLimiter,
    /// `None` while running `describe`, which must not use capabilities.
    pub(crate) context: Option<StepContext>,
    pub(crate) services: Services,
    pub(crate) grants: Grants,
    pub(crate) log: Arc<Mutex<LogBook>>,
    /// The guest's stdout and stderr, kept to flush a last unterminated line.
    pub(crate) outputs: [CappedOutput; 2],
    /// Number of `send-mail` calls so far: the n-th call of every attempt of
    /// a step shares one outbox key, so a retry re-sends nothing.
    pub(crate) mail_calls: u32,
    pub(crate) notify_calls: u32,
}

/// The attempt's log lines, capped by bytes. Stdout and stderr of the guest
/// land here too.
pub(crate) struct LogBook {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) bytes: usize,
    pub(crate) cap: usize,
    pub(crate) dropped: u64,
}

impl LogBook {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            lines: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, level: &'static str, message: String) {
        if self.bytes + message.len() > self.cap {
            self.dropped += 1;
            return;
        }
        self.bytes += message.len();
        self.lines.push(LogLine {
            level,
            message,
            at: chrono::Utc::now(),
        });
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A WASI context with nothing in it: no environment, no arguments, no
/// preopened directories, no sockets; stdout and stderr go to the log.
pub(crate) fn empty_wasi(log: &Arc<Mutex<LogBook>>) -> (WasiCtx, [CappedOutput; 2]) {
    let stdout = CappedOutput::new(log.clone(), "stdout");
    let stderr = CappedOutput::new(log.clone(), "stderr");
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    (wasi, [stdout, stderr])
}

impl Sandbox {
    fn denied(&self, what: &str) -> String {
        format!("denied: this plugin is not granted {what}")
    }
}

impl host::Host for Sandbox {
    async fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        lock(&self.log).push(level, message);
    }

    async fn progress(&mut self, percent: u8, note: String) {
        let note: String = note.chars().take(500).collect();
        self.services.progress.progress(percent.min(100), &note);
    }

    async fn secret(&mut self, name: String) -> Option<String> {
        if self.context.is_none() || !self.grants.allows_secret(&name) {
            return None;
        }
        self.services.secrets.get(&name).await
    }

    async fn read_file(&mut self, file_id: String) -> Result<Vec<u8>, String> {
        if self.context.is_none() || !self.grants.files {
            return Err(self.denied("files"));
        }
        self.services.files.read(&file_id, MAX_FILE_BYTES).await
    }

    async fn send_mail(&mut self, message: Mail) -> Result<String, String> {
        let Some(context) = &self.context else {
            return Err(self.denied("mail during describe"));
        };
        if !self.grants.mail {
            return Err(self.denied("mail"));
        }
        if message.to.is_empty() {
            return Err("a message needs at least one recipient in `to`".into());
        }
        self.mail_calls += 1;
        let key = format!("{}#{}", context.idempotency_key, self.mail_calls);
        let mail = OutgoingMail {
            to: message.to,
            cc: message.cc,
            subject: message.subject,
            body: message.body,
        };
        self.services.mail.send(&key, mail).await
    }

    async fn notify(&mut self, notification: Notification) -> Result<String, String> {
        let Some(context) = &self.context else {
            return Err(self.denied("notifications during describe"));
        };
        if !self.grants.notify {
            return Err(self.denied("notify"));
        }
        if notification.title.trim().is_empty() {
            return Err("a notification needs a title".into());
        }
        const LEVELS: [&str; 4] = ["info", "success", "warning", "error"];
        let level = if notification.level.is_empty() {
            "info".to_owned()
        } else if LEVELS.contains(&notification.level.as_str()) {
            notification.level
        } else {
            return Err(format!(
                "level {:?} is not one of info, success, warning, error",
                notification.level
            ));
        };
        // Keyed like mail, in their own sequence.
        self.notify_calls += 1;
        let key = format!("{}#n{}", context.idempotency_key, self.notify_calls);
        let notification = OutgoingNotification {
            title: notification.title.chars().take(200).collect(),
            body: notification.body.chars().take(10_000).collect(),
            level,
            audience: notification.audience.chars().take(200).collect(),
            link: notification.link.chars().take(2000).collect(),
        };
        self.services.notifications.notify(&key, notification).await
    }
}

impl super::bindings::weft::plugin::types::Host for Sandbox {}
