//! Delivers outbox messages over SMTP with lettre, when the operator
//! configured a relay (`--smtp-url smtp://user:pass@host:587?tls=required`,
//! or `smtps://…` for implicit TLS). Without one, messages stay in the
//! outbox and nothing is sent.
//!
//! Each message carries its outbox id as `Message-ID`, so a relay or a
//! mailbox that deduplicates sees a redelivery as the same message.

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
    #[error("SMTP delivery: {0}")]
    Delivery(String),
}

impl MailError {
    /// Whether trying again later may help (the relay was down or
    /// answered with a transient code), as opposed to a message that will
    /// never be accepted.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Delivery(_))
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
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Delivery(e.to_string()))?;
        Ok(())
    }
}
