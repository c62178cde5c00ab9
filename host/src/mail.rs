//! Delivers outbox messages over SMTP with lettre, when the operator
//! configured a relay (`--smtp-url smtp://user:pass@host:587?tls=required`,
//! or `smtps://…` for implicit TLS). Without one, messages stay in the
//! outbox and nothing is sent.
//!
//! Each message carries its outbox id as `Message-ID`, so a relay or a
//! mailbox that deduplicates sees a redelivery as the same message.
//!
//! Delivery is at least once: a message the relay accepted just before the
//! host was killed is sent again after the restart, with the same
//! `Message-ID`. A transient failure (relay unreachable, a 4xx reply) is
//! retried on the schedule of [`MailRetry`]; a permanent one (a 5xx reply,
//! an address that does not parse) fails the message at once.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::runtime::services::OutgoingMail;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP relay URL: {0}")]
    Config(String),
    #[error("address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("building the message: {0}")]
    Build(String),
    /// The relay could not be reached or answered with a transient (4xx)
    /// code: trying later may work.
    #[error("SMTP delivery: {0}")]
    Delivery(String),
    /// The relay refused the message with a permanent (5xx) code; the
    /// text is its reply.
    #[error("SMTP relay refused the message: {0}")]
    Refused(String),
}

impl MailError {
    /// Whether trying again later may help (the relay was down or
    /// answered with a transient code), as opposed to a message that will
    /// never be accepted.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Delivery(_) => true,
            Self::Config(_) | Self::Address { .. } | Self::Build(_) | Self::Refused(_) => false,
        }
    }
}

/// When the outbox sender tries a message again after a transient failure:
/// `base`, doubling each time up to `cap`, each wait drawn within ±20 %
/// (so hosts and messages do not retry in step); after `max_attempts`
/// attempts the message fails. The defaults wait 30 s, 1, 2, 4, 8, 16 and
/// 32 min, then every hour: 31 attempts span about 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailRetry {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

impl Default for MailRetry {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            max_attempts: 31,
        }
    }
}

impl MailRetry {
    /// The wait after failed attempt number `attempt` (1-based), before
    /// jitter; `None` once the attempts are spent.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        Some(self.base.saturating_mul(factor).min(self.cap))
    }

    /// [`Self::delay`] scaled by `jitter` (0.8 to 1.2), in whole ms.
    pub fn jittered(&self, attempt: u32, jitter: f64) -> Option<i64> {
        self.delay(attempt)
            .map(|d| (d.as_millis() as f64 * jitter.clamp(0.8, 1.2)) as i64)
    }
}

/// An SMTP relay and the sender address messages go out from.
#[derive(Clone)]
pub struct SmtpRelay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_owned(),
            reason: e.to_string(),
        })
}

impl SmtpRelay {
    pub fn new(url: &str, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Config(e.to_string()))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Self {
            transport,
            from: mailbox(from)?,
        })
    }

    /// Sends one message as plain text.
    pub async fn deliver(&self, message_id: &str, mail: &OutgoingMail) -> Result<(), MailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{message_id}@weft>")))
            .header(ContentType::TEXT_PLAIN);
        for to in &mail.to {
            builder = builder.to(mailbox(to)?);
        }
        for cc in &mail.cc {
            builder = builder.cc(mailbox(cc)?);
        }
        let message = builder
            .body(mail.body.clone())
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport.send(message).await.map_err(|e| {
            if e.is_permanent() {
                MailError::Refused(e.to_string())
            } else {
                MailError::Delivery(e.to_string())
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::MailRetry;

    #[test]
    fn the_default_schedule_doubles_from_30_seconds_to_an_hour_over_a_day() {
        let retry = MailRetry::default();
        let waits: Vec<u64> = (1..retry.max_attempts)
            .map(|n| retry.delay(n).expect("within the attempts").as_secs())
            .collect();
        assert_eq!(&waits[..9], [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert!(waits.iter().all(|&w| w <= 3600));
        let total: u64 = waits.iter().sum();
        assert!(
            (23 * 3600..=25 * 3600).contains(&total),
            "{total} s is about a day"
        );
        assert_eq!(retry.delay(retry.max_attempts), None, "then it fails");
    }

    #[test]
    fn jitter_stays_within_a_fifth_of_the_wait() {
        let retry = MailRetry {
            base: Duration::from_millis(1000),
            cap: Duration::from_millis(4000),
            max_attempts: 5,
        };
        assert_eq!(retry.jittered(1, 0.8), Some(800));
        assert_eq!(retry.jittered(1, 9.0), Some(1200));
        assert_eq!(retry.jittered(4, 1.0), Some(4000));
        assert_eq!(retry.jittered(5, 1.0), None);
    }
}
