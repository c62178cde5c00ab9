//! Secrets at rest: sealed with ChaCha20-Poly1305 under the operator's key,
//! which lives outside the database (`--secrets-key`, or a file in the data
//! directory created on first start). The associated data binds each
//! ciphertext to its tenant and name.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets key must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("secrets key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("a stored secret could not be decrypted (wrong secrets key?)")]
    Decrypt,
}

pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// Signs task links: derived from the key, so every host that shares
    /// the key accepts the links of the others.
    link_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_hex(text: &str) -> Result<Self, SecretsError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SecretsError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretsError::BadKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            link_key: mac(&bytes, b"weft task links v1"),
        })
    }

    /// The key in `path`, created (random, mode 0600) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let key: [u8; 32] = rand::random();
            // Owner-only from the start: never readable by others, even briefly.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut file| file.write_all(hex::encode(key).as_bytes()))
                .map_err(io)?;
        }
        Self::from_hex(&std::fs::read_to_string(path).map_err(io)?)
    }

    /// The signature of a task link's `message`.
    pub fn sign_link(&self, message: &[u8]) -> [u8; 32] {
        mac(&self.link_key, message)
    }

    /// Whether `tag` is the signature of `message` (compared in constant
    /// time).
    pub fn verify_link(&self, message: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac as _;
        let mut hmac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.link_key)
            .expect("HMAC takes any key length");
        hmac.update(message);
        hmac.verify_slice(tag).is_ok()
    }

    fn aad(tenant: &str, name: &str) -> Vec<u8> {
        format!("{tenant}\0{name}").into_bytes()
    }

    pub fn seal(&self, tenant: &str, name: &str, value: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = Self::aad(tenant, name);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        sealed
    }

    pub fn open(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretsError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = Self::aad(tenant, name);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Decrypt)
    }
}

/// HMAC-SHA256 of `message` under `key`.
fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut hmac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
        .expect("HMAC takes any key length");
    hmac.update(message);
    hmac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_tenant_and_name() {
        let secrets = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let sealed = secrets.seal("t1", "API_TOKEN", b"s3cret");
        assert!(
            !sealed.windows(6).any(|w| w == b"s3cret"),
            "stored in clear"
        );
        assert_eq!(secrets.open("t1", "API_TOKEN", &sealed).unwrap(), b"s3cret");
        assert!(secrets.open("t2", "API_TOKEN", &sealed).is_err());
        assert!(secrets.open("t1", "OTHER", &sealed).is_err());
        let other_key = SecretBox::from_hex(&"22".repeat(32)).unwrap();
        assert!(other_key.open("t1", "API_TOKEN", &sealed).is_err());
        assert!(SecretBox::from_hex("abc").is_err());
    }
}
