//! Outbound webhooks: subscriptions, fan-out from the event log and signed
//! delivery with retries.
//!
//! Every run transition appends events in the transaction that makes it.
//! The fan-out reads each active subscription's tenant events after its
//! cursor and, in one transaction, inserts a delivery per matching event and
//! moves the cursor: a delivery exists for every committed event whatever
//! crashes happen, and at most once per (subscription, event). The sender
//! then posts due deliveries, signed per Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`), records every attempt, and
//! retries failures on [`retry_delay`]'s schedule. A claimed delivery's next
//! attempt is pushed a lease ahead before sending, so a host killed
//! mid-send sends it again later (receivers dedupe by `webhook-id`).
//!
//! Deliveries connect only to addresses the operator's egress policy allows
//! (the runtime's, [`crate::egress`]): names through the client's resolver,
//! IP literals checked before sending; no proxy, no redirects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, rfc3339};
use crate::db::webhooks::{AttemptRow, DeliveryRow, EventForDelivery, WebhookRow};
use crate::db::{self, DbError};
use crate::egress::{self, EgressError};

/// Event types a subscription can ask for.
pub const EVENT_TYPES: [&str; 20] = [
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.terminated",
    "run.paused",
    "run.declined",
    "run.held",
    "run.unheld",
    "run.rerun",
    "step.started",
    "step.completed",
    "step.failed",
    "task.created",
    "task.viewed",
    "task.reminded",
    "task.completed",
    "task.declined",
    "task.expired",
    "task.revoked",
];

/// Default first retry delay.
pub const DEFAULT_RETRY_BASE_MS: u64 = 5_000;
/// Default consecutive failed attempts that disable a subscription.
pub const DEFAULT_DISABLE_AFTER: u32 = 100;
/// Attempts per delivery before it is marked failed.
pub const MAX_ATTEMPTS: i64 = 10;
/// Longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(6 * 3600);
/// How long a receiver has to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery is retried after this if its host dies mid-send.
const CLAIM_LEASE_MS: i64 = 60_000;
/// Most subscriptions per tenant.
pub const MAX_WEBHOOKS_PER_TENANT: usize = 50;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The first retry's delay; each later one is four times longer (capped
    /// at six hours), with ±20 % jitter.
    pub retry_base: Duration,
    /// Consecutive failed attempts that disable a subscription.
    pub disable_after: u32,
    /// Queue deliveries but send none.
    pub hold: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_millis(DEFAULT_RETRY_BASE_MS),
            disable_after: DEFAULT_DISABLE_AFTER,
            hold: false,
        }
    }
}

/// The wait before retry number `retry` (1-based): base × 4^(retry−1),
/// at most six hours, before jitter. With the default base: 5 s, 20 s,
/// 80 s, 5 min, 21 min, 85 min, 5.7 h, 6 h, 6 h — about 19 hours in all.
pub fn retry_delay(base: Duration, retry: u32) -> Duration {
    let factor = 4u32.saturating_pow(retry.saturating_sub(1));
    base.saturating_mul(factor).min(MAX_DELAY)
}

/// A subscription as the API creates it.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
}

/// What a PATCH may change.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
}

fn check_url(url: &str) -> Result<(), EngineError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| EngineError::InvalidInput(format!("url {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(EngineError::InvalidInput(format!(
            "url {url:?} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(())
}

fn check_events(events: &[String]) -> Result<(), EngineError> {
    if events.is_empty() {
        return Err(EngineError::InvalidInput(
            "events must name at least one event type (or \"*\" for all)".into(),
        ));
    }
    for event in events {
        if event != "*" && !EVENT_TYPES.contains(&event.as_str()) {
            return Err(EngineError::InvalidInput(format!(
                "unknown event type {event:?}; use \"*\" or any of {}",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    Ok(())
}

/// The key bytes of a `whsec_<base64>` secret.
fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("secret must look like whsec_<base64>")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("secret is not valid base64 after whsec_: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "secret must hold 24 to 64 bytes, found {}",
            key.len()
        ));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Whether a subscription to `events` wants an event of type `kind`.
fn wants(events: &[String], kind: &str) -> bool {
    EVENT_TYPES.contains(&kind) && events.iter().any(|e| e == "*" || e == kind)
}

/// The JSON body posted for an event.
fn payload(event: &EventForDelivery) -> Value {
    let details: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let mut data = json!({
        "run_id": event.run_id,
        "workflow": event.workflow_key,
        "version": event.workflow_version,
        "run_status": event.run_status,
        "event_id": event.id,
    });
    if let Some(step) = &event.step_id {
        data["step_id"] = json!(step);
    }
    let labels: Value = event
        .run_labels
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| json!({}));
    data["labels"] = labels;
    if let (Value::Object(details), Value::Object(out)) = (details, &mut data) {
        for (k, v) in details {
            out.entry(k).or_insert(v);
        }
    }
    json!({"type": event.kind, "timestamp": rfc3339(event.at), "data": data})
}

impl Engine {
    fn seal_webhook_secret(
        &self,
        tenant: &str,
        id: &str,
        secret: &str,
    ) -> Result<Vec<u8>, EngineError> {
        let sealer = self
            .config
            .secrets
            .as_ref()
            .ok_or_else(|| EngineError::Conflict("no secrets key is configured".into()))?;
        Ok(sealer.seal(tenant, &format!("webhook:{id}"), secret.as_bytes()))
    }

    fn open_webhook_secret(&self, hook: &WebhookRow) -> Result<Vec<u8>, String> {
        let sealer = self
            .config
            .secrets
            .as_ref()
            .ok_or("no secrets key is configured")?;
        let secret = sealer
            .open(
                &hook.tenant_id,
                &format!("webhook:{}", hook.id),
                &hook.secret,
            )
            .map_err(|e| e.to_string())?;
        secret_key(&String::from_utf8_lossy(&secret))
    }

    /// Creates a subscription; returns it with its secret (shown only here).
    pub async fn create_webhook(
        &self,
        tenant: &str,
        new: NewWebhook,
    ) -> Result<(WebhookRow, String), EngineError> {
        check_url(&new.url)?;
        check_events(&new.events)?;
        let secret = match new.secret {
            Some(secret) => {
                secret_key(&secret).map_err(EngineError::InvalidInput)?;
                secret
            }
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill(&mut key);
                format!(
                    "whsec_{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            }
        };
        {
            let mut conn = self.db.reader().await?;
            if db::webhooks::list(&mut conn, tenant).await?.len() >= MAX_WEBHOOKS_PER_TENANT {
                return Err(EngineError::Conflict(format!(
                    "a tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks"
                )));
            }
        }
        let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
        let now = db::now_ms();
        let row = WebhookRow {
            secret: self.seal_webhook_secret(tenant, &id, &secret)?,
            id,
            tenant_id: tenant.to_owned(),
            url: new.url,
            events: serde_json::to_string(&new.events).map_err(DbError::from)?,
            status: "active".into(),
            disabled_reason: None,
            consecutive_failures: 0,
            cursor: 0,
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.db.writer().await?;
        db::webhooks::insert(&mut conn, &row).await?;
        Ok((row, secret))
    }

    pub async fn list_webhooks(&self, tenant: &str) -> Result<Vec<WebhookRow>, EngineError> {
        let mut conn = self.db.reader().await?;
        Ok(db::webhooks::list(&mut conn, tenant).await?)
    }

    pub async fn get_webhook(&self, tenant: &str, id: &str) -> Result<WebhookRow, EngineError> {
        let mut conn = self.db.reader().await?;
        db::webhooks::get(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("webhook {id:?}")))
    }

    pub async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<WebhookRow, EngineError> {
        let mut row = self.get_webhook(tenant, id).await?;
        if let Some(url) = patch.url {
            check_url(&url)?;
            row.url = url;
        }
        if let Some(events) = patch.events {
            check_events(&events)?;
            row.events = serde_json::to_string(&events).map_err(DbError::from)?;
        }
        let mut reenabled = false;
        match patch.active {
            Some(true) if row.status != "active" => {
                row.status = "active".into();
                row.disabled_reason = None;
                row.consecutive_failures = 0;
                reenabled = true;
            }
            Some(false) => {
                row.status = "disabled".into();
                row.disabled_reason = Some("disabled by a client".into());
            }
            _ => {}
        }
        row.updated_at = db::now_ms();
        let mut conn = self.db.writer().await?;
        db::webhooks::update(&mut conn, &row, reenabled).await?;
        drop(conn);
        self.webhook_wake.notify_one();
        self.get_webhook(tenant, id).await
    }

    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        let mut tx = self.db.begin().await?;
        if !db::webhooks::delete(&mut tx, tenant, id).await? {
            return Err(EngineError::NotFound(format!("webhook {id:?}")));
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }

    /// A subscription's deliveries with their attempts, newest first.
    pub async fn webhook_deliveries(
        &self,
        tenant: &str,
        id: &str,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<DeliveryRow>, Vec<AttemptRow>), EngineError> {
        self.get_webhook(tenant, id).await?;
        let mut conn = self.db.reader().await?;
        let deliveries = db::webhooks::deliveries(&mut conn, id, status, cursor, limit).await?;
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        let attempts = db::webhooks::attempts_of(&mut conn, &ids).await?;
        Ok((deliveries, attempts))
    }

    /// Queues a delivery again at once, with a fresh retry schedule.
    pub async fn redeliver(
        &self,
        tenant: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<DeliveryRow, EngineError> {
        self.get_webhook(tenant, webhook_id).await?;
        let mut conn = self.db.writer().await?;
        let mut delivery = db::webhooks::get_delivery(&mut conn, webhook_id, delivery_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("delivery {delivery_id:?}")))?;
        delivery.status = "pending".into();
        delivery.retry_index = 0;
        delivery.next_attempt_at = Some(db::now_ms());
        db::webhooks::update_delivery(&mut conn, &delivery).await?;
        drop(conn);
        self.webhook_wake.notify_one();
        Ok(delivery)
    }

    /// Turns new events into deliveries for every active subscription.
    /// Returns how many deliveries were queued.
    ///
    /// Each batch is one transaction that holds the subscription's row: the
    /// cursor it reads is the one it moves, and a host that finds the row
    /// held skips the subscription (another host is fanning it out).
    pub async fn fan_out_webhooks(&self) -> Result<usize, EngineError> {
        let hooks = {
            let mut conn = self.db.reader().await?;
            db::webhooks::active(&mut conn).await?
        };
        let mut queued = 0;
        for hook in hooks {
            let events: Vec<String> = serde_json::from_str(&hook.events).unwrap_or_default();
            let mut cursor = hook.cursor;
            loop {
                // Most passes find nothing new: look on a reader first, and
                // take a writer (SQLite has one) only for new events.
                let new = {
                    let mut conn = self.db.reader().await?;
                    db::webhooks::events_after(&mut conn, &hook.tenant_id, cursor, 1).await?
                };
                if new.is_empty() {
                    break;
                }
                let mut tx = self.db.begin().await?;
                let Some(held) = db::webhooks::lock_for_fan_out(&mut tx, &hook.id).await? else {
                    break;
                };
                let batch = db::webhooks::events_after(&mut tx, &hook.tenant_id, held, 500).await?;
                let Some(last) = batch.last().map(|e| e.id) else {
                    break;
                };
                let now = db::now_ms();
                for event in batch.iter().filter(|e| wants(&events, &e.kind)) {
                    let delivery = DeliveryRow {
                        id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                        webhook_id: hook.id.clone(),
                        tenant_id: hook.tenant_id.clone(),
                        event_id: event.id,
                        event_type: event.kind.clone(),
                        payload: payload(event).to_string(),
                        status: "pending".into(),
                        attempts: 0,
                        retry_index: 0,
                        next_attempt_at: Some(now),
                        delivered_at: None,
                        created_at: now,
                    };
                    db::webhooks::insert_delivery(&mut tx, &delivery).await?;
                    queued += 1;
                }
                db::webhooks::set_cursor(&mut tx, &hook.id, last).await?;
                tx.commit().await.map_err(DbError::from)?;
                cursor = last;
                if batch.len() < 500 {
                    break;
                }
            }
        }
        Ok(queued)
    }

    /// Sends every due delivery once; returns how many were attempted.
    pub async fn send_due_webhooks(&self, client: &reqwest::Client) -> Result<usize, EngineError> {
        let due = {
            let mut conn = self.db.writer().await?;
            db::webhooks::claim_due(&mut conn, db::now_ms(), CLAIM_LEASE_MS, 32).await?
        };
        let count = due.len();
        let sends = due.into_iter().map(|d| self.send_one(client, d));
        for result in futures::future::join_all(sends).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "recording a webhook attempt");
            }
        }
        Ok(count)
    }

    async fn send_one(
        &self,
        client: &reqwest::Client,
        mut delivery: DeliveryRow,
    ) -> Result<(), EngineError> {
        let hook = {
            let mut conn = self.db.reader().await?;
            db::webhooks::get(&mut conn, &delivery.tenant_id, &delivery.webhook_id).await?
        };
        let Some(hook) = hook else {
            return Ok(());
        };
        let started = Instant::now();
        let at = db::now_ms();
        // A name is checked by the client's resolver, on the address it
        // connects to; an IP literal never reaches the resolver.
        let checked = reqwest::Url::parse(&hook.url)
            .map_err(|e| format!("url {:?} is not a URL: {e}", hook.url))
            .and_then(|url| {
                self.runtime
                    .config()
                    .egress
                    .check_url(&url)
                    .map_err(|refused| refused.to_string())
            });
        let outcome: Result<u16, String> = match self.open_webhook_secret(&hook) {
            Err(e) => Err(format!("cannot sign: {e}")),
            Ok(_) if checked.is_err() => Err(checked.err().unwrap_or_default()),
            Ok(key) => {
                let timestamp = at / 1000;
                let signature = sign(&key, &delivery.id, timestamp, &delivery.payload);
                client
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &delivery.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(delivery.payload.clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| describe_send_error(&e))
            }
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let success = matches!(outcome, Ok(code) if (200..300).contains(&code));
        delivery.attempts += 1;
        let attempt = AttemptRow {
            delivery_id: delivery.id.clone(),
            attempt: delivery.attempts,
            at,
            status_code: outcome.as_ref().ok().map(|c| i64::from(*c)),
            error: match &outcome {
                Ok(code) if !success => Some(format!("receiver answered {code}")),
                Ok(_) => None,
                Err(e) => Some(e.clone()),
            },
            duration_ms,
        };
        let now = db::now_ms();
        if success {
            delivery.status = "delivered".into();
            delivery.delivered_at = Some(now);
            delivery.next_attempt_at = None;
        } else {
            delivery.retry_index += 1;
            if delivery.retry_index >= MAX_ATTEMPTS {
                delivery.status = "failed".into();
                delivery.next_attempt_at = None;
            } else {
                let delay = retry_delay(
                    self.config.webhooks.retry_base,
                    u32::try_from(delivery.retry_index).unwrap_or(u32::MAX),
                );
                let jitter = rand::rng().random_range(0.8..1.2);
                delivery.next_attempt_at = Some(now + (delay.as_millis() as f64 * jitter) as i64);
            }
        }
        let gone = matches!(outcome, Ok(410)).then_some("the receiver answered 410 Gone");
        let mut tx = self.db.begin().await?;
        db::webhooks::insert_attempt(&mut tx, &attempt).await?;
        db::webhooks::update_delivery(&mut tx, &delivery).await?;
        let disabled = db::webhooks::record_outcome(
            &mut tx,
            &hook.id,
            success,
            gone,
            i64::from(self.config.webhooks.disable_after),
            now,
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        if disabled && hook.status == "active" {
            tracing::warn!(webhook_id = %hook.id, url = %hook.url, "webhook disabled after failed deliveries");
        }
        Ok(())
    }

    /// Fans out and sends until shutdown; wakes on run changes, on API
    /// changes to subscriptions, and at the next due retry.
    pub(crate) async fn run_webhooks(self: Arc<Self>, shutdown: CancellationToken) {
        // Redirects are not followed, no proxy from the environment is used
        // (it would connect for us, unchecked), and names resolve only to
        // addresses the egress policy allows.
        let client = match reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(egress::Resolver(
                self.runtime.config().egress.clone(),
            )))
            .user_agent(concat!("weft-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhooks disabled: cannot build an HTTP client");
                return;
            }
        };
        loop {
            if let Err(e) = self.fan_out_webhooks().await {
                tracing::warn!(error = %e, "webhook fan-out");
            }
            // Read first, and take the single writer only when something is
            // due: an idle subscription list must cost the engine nothing.
            let next_due = || async {
                match self.db.reader().await {
                    Ok(mut conn) => db::webhooks::next_due(&mut conn).await.ok().flatten(),
                    Err(_) => None,
                }
            };
            let mut next = next_due().await;
            if !self.config.webhooks.hold && next.is_some_and(|t| t <= db::now_ms()) {
                match self.send_due_webhooks(&client).await {
                    // A full batch: more may be due right away.
                    Ok(32) => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook delivery"),
                }
                next = next_due().await;
            }
            let wait = next.map_or(1000, |t| (t - db::now_ms()).clamp(20, 1000));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                () = self.webhook_wake.notified() => {
                    // Let a burst of transitions land before reading them.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// A send failure in words: timeouts, refused destinations and refused
/// connections say so.
fn describe_send_error(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<EgressError>() {
            return refused.to_string();
        }
        source = cause.source();
    }
    if e.is_timeout() {
        format!("no answer within {} s", SEND_TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("could not connect: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_schedule_grows_to_hours() {
        let base = Duration::from_secs(5);
        let delays: Vec<u64> = (1..MAX_ATTEMPTS as u32)
            .map(|n| retry_delay(base, n).as_secs())
            .collect();
        assert_eq!(delays, [5, 20, 80, 320, 1280, 5120, 20480, 21600, 21600]);
        let total: u64 = delays.iter().sum();
        assert!(total > 12 * 3600, "{total}");
    }

    #[test]
    fn event_filters() {
        let all = vec!["*".to_owned()];
        assert!(wants(&all, "run.completed"));
        assert!(
            !wants(&all, "run.created"),
            "internal events are not offered"
        );
        let some = vec!["step.failed".to_owned()];
        assert!(wants(&some, "step.failed"));
        assert!(!wants(&some, "run.failed"));
        assert!(check_events(&["run.done".into()]).is_err());
        assert!(check_events(&[]).is_err());
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(secret_key("plain").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://example.com/hook").is_ok());
    }

    #[test]
    fn only_public_addresses_are_public() {
        // What the webhook filter refused before the egress policy took
        // over; the policy refuses it all by default.
        let policy = crate::egress::EgressPolicy::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(policy.check(private.parse().unwrap()).is_err(), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(policy.check(public.parse().unwrap()).is_ok(), "{public}");
        }
    }
}
