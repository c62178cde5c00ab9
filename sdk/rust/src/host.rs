//! Host capabilities: log, progress, secrets, files, mail and notifications.
//!
//! Each call is checked by the host against what the plugin was granted; a
//! capability that was not granted answers as if the thing did not exist
//! (`secret`) or with an error naming the problem (`read_file`, `send_mail`,
//! `notify`).

use crate::bindings::weft::plugin::host as wit;

pub use wit::LogLevel;

/// Appends a line to the attempt's log (capped per attempt by the host).
pub fn log(level: LogLevel, message: &str) {
    wit::log(level, message);
}

pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// Reports progress of a long attempt, 0 to 100 percent.
pub fn progress(percent: u8, note: &str) {
    wit::progress(percent.min(100), note);
}

/// The tenant's secret `name`, if it exists and this plugin is granted it.
pub fn secret(name: &str) -> Option<String> {
    wit::secret(name)
}

/// The bytes of an uploaded file of this run's tenant.
pub fn read_file(file_id: &str) -> Result<Vec<u8>, String> {
    wit::read_file(file_id)
}

/// An email message for [`send_mail`].
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Whether `address` looks like `local@domain`: no spaces, angle brackets or
/// commas, and a dot inside the domain. A cheap check that catches typos
/// and lists pasted into one field before the outbox refuses them.
pub fn is_plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == ',')
}

/// Queues a message in the tenant's outbox and returns its message id.
/// Retried attempts get the same id back and send nothing twice.
pub fn send_mail(mail: &Mail) -> Result<String, String> {
    wit::send_mail(&wit::Mail {
        to: mail.to.clone(),
        cc: mail.cc.clone(),
        subject: mail.subject.clone(),
        body: mail.body.clone(),
    })
}

/// An in-app notification for [`notify`].
#[derive(Debug, Clone, Default)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// `info`, `success`, `warning` or `error`.
    pub level: String,
    /// A user, team or role name; empty for everyone in the tenant.
    pub audience: String,
    /// A link the notification points to; empty for none.
    pub link: String,
}

/// Records an in-app notification (readable at `GET /v1/notifications`)
/// and returns its id. Retried attempts get the same id back and create
/// nothing twice.
pub fn notify(notification: &Notification) -> Result<String, String> {
    wit::notify(&wit::Notification {
        title: notification.title.clone(),
        body: notification.body.clone(),
        level: notification.level.clone(),
        audience: notification.audience.clone(),
        link: notification.link.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org"] {
            assert!(is_plausible_address(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.co",
            "a b@c.de",
            "<a@b.co>",
            "a@.co",
            "a@b.co,c@d.ef",
        ] {
            assert!(!is_plausible_address(bad), "{bad}");
        }
    }
}
