//! Plugins as OCI artifacts: push a component to a registry, pull one back.
//!
//! The layout is that of the CNCF WebAssembly OCI artifact conventions
//! (what `wkg` and wasm-pkg-tools read and write): an image manifest whose
//! config has media type [`CONFIG_MEDIA_TYPE`] and whose single layer, of
//! media type [`LAYER_MEDIA_TYPE`], is the component's bytes.
//!
//! Digests are checked on the way in: a reference by digest must match the
//! manifest the registry sends, and the layer must hash to the digest the
//! manifest names (the client verifies both while reading). Reads stop at
//! a size limit before the bytes are all in memory.
//!
//! Credentials come from the Docker config file (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`): an `auths` entry for the registry, with a
//! base64 `auth` (`user:password`) or `username` and `password`. Without one
//! the registry is used anonymously. Plain HTTP is used only for loopback
//! registries (`localhost`, `127.0.0.1`, `[::1]`) and hosts named in
//! [`RegistryOptions::plain_http`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The config media type of a WebAssembly component artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of the layer that holds the component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not a reference of the form `host/namespace/name:tag` or `…@sha256:…`.
    #[error("{0}")]
    InvalidReference(String),
    /// The registry does not have it (or hides it from these credentials).
    #[error("{0}")]
    NotFound(String),
    /// The registry wants credentials, or refused the ones found.
    #[error("{0}")]
    Unauthorized(String),
    /// The artifact is not a WebAssembly component artifact.
    #[error("{0}")]
    NotWasm(String),
    /// The content does not hash to the digest that names it.
    #[error("{0}")]
    DigestMismatch(String),
    /// The component is larger than the limit.
    #[error("the component in {reference} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        reference: String,
        size: u64,
        limit: usize,
    },
    /// The Docker config file exists but cannot be read.
    #[error("{0}")]
    Credentials(String),
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP although
    /// they are not on the loopback interface.
    pub plain_http: Vec<String>,
}

/// A component pulled from a registry.
#[derive(Debug)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// The manifest digest (`sha256:…`): the reference pinned to it always
    /// names these bytes.
    pub digest: String,
}

/// Parses `[oci://]host[:port]/namespace/name(:tag|@sha256:…)`. The
/// registry must be named: a bare `name:tag` does not silently mean
/// Docker Hub.
pub fn parse_reference(text: &str) -> Result<Reference, OciError> {
    let trimmed = text.trim();
    let bare = trimmed.strip_prefix("oci://").unwrap_or(trimmed);
    let invalid = |why: &str| {
        OciError::InvalidReference(format!(
            "{text:?} is not an OCI reference like registry.example.com/namespace/name:1.0.0 or …/name@sha256:<digest>: {why}"
        ))
    };
    let first = bare.split('/').next().unwrap_or_default();
    let names_registry =
        bare.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !names_registry {
        return Err(invalid("name the registry host first"));
    }
    let reference: Reference = bare.parse().map_err(|e| invalid(&format!("{e}")))?;
    if let Some(digest) = reference.digest()
        && !digest
            .strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid("only sha256 digests are accepted"));
    }
    Ok(reference)
}

/// The registry's host without a port: what `--oci-allow` and the
/// loopback rule compare.
pub fn registry_host(reference: &Reference) -> &str {
    host_of(reference.registry())
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(host, _)| host)
}

/// Whether `allowed` (entries `host` or `host:port`) lets this reference's
/// registry be used.
pub fn registry_allowed(reference: &Reference, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        entry.eq_ignore_ascii_case(reference.registry())
            || (!entry.contains(':') && entry.eq_ignore_ascii_case(registry_host(reference)))
    })
}

/// A registry client for one operation's registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// `host[:port]`, for messages.
    name: String,
}

impl Registry {
    /// A client for `reference`'s registry, with the credentials the
    /// Docker config file holds for it.
    pub fn for_reference(
        reference: &Reference,
        options: &RegistryOptions,
    ) -> Result<Self, OciError> {
        let name = reference.registry().to_owned();
        let host = registry_host(reference);
        let plain = matches!(host, "localhost" | "127.0.0.1" | "::1")
            || options
                .plain_http
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name) || h.eq_ignore_ascii_case(host));
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let auth = docker_credentials(&name)?
            .map_or(RegistryAuth::Anonymous, |(user, password)| {
                RegistryAuth::Basic(user, password)
            });
        Ok(Self {
            client: Client::new(config),
            auth,
            name,
        })
    }

    fn error(&self, reference: &Reference, e: OciDistributionError) -> OciError {
        let whole = reference.whole();
        let refused = match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => true,
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
            _ => false,
        };
        if refused {
            return OciError::Unauthorized(format!(
                "registry {} refused access to {whole}: {}",
                self.name,
                if matches!(self.auth, RegistryAuth::Anonymous) {
                    "no credentials for it in the Docker config file (DOCKER_CONFIG or ~/.docker/config.json)"
                } else {
                    "the credentials in the Docker config file were not accepted"
                }
            ));
        }
        match e {
            OciDistributionError::ImageManifestNotFoundError(_) => {
                OciError::NotFound(format!("{whole} not found in registry {}", self.name))
            }
            OciDistributionError::DigestError(e) => OciError::DigestMismatch(format!(
                "{whole}: the registry's content does not match its digest ({e}); refused"
            )),
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) =>
            {
                OciError::NotFound(format!("{whole} not found in registry {}", self.name))
            }
            OciDistributionError::ServerError { code: 404, .. } => {
                OciError::NotFound(format!("{whole} not found in registry {}", self.name))
            }
            other => OciError::Registry {
                registry: self.name.clone(),
                message: other.to_string(),
            },
        }
    }

    /// Pulls the component `reference` names, refusing anything over
    /// `limit` bytes and any content that does not match its digest.
    pub async fn pull(&self, reference: &Reference, limit: usize) -> Result<Pulled, OciError> {
        let (manifest, digest) = self
            .client
            .pull_image_manifest(reference, &self.auth)
            .await
            .map_err(|e| self.error(reference, e))?;
        // A reference by digest: the client compared the manifest's bytes
        // with it; say so plainly if the registry claims another.
        if let Some(wanted) = reference.digest()
            && wanted != digest
        {
            return Err(OciError::DigestMismatch(format!(
                "{}: the registry answered with manifest {digest}; refused",
                reference.whole()
            )));
        }
        let layer = wasm_layer(&manifest, reference)?;
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > limit as u64 {
            return Err(OciError::TooLarge {
                reference: reference.whole(),
                size,
                limit,
            });
        }
        let mut stream = self
            .client
            .pull_blob_stream(reference, &layer)
            .await
            .map_err(|e| self.error(reference, e))?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| {
                // The verifying stream reports a digest mismatch as an I/O
                // error at the end.
                let text = e.to_string();
                let mismatch = e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
                if mismatch {
                    OciError::DigestMismatch(format!(
                        "{}: layer {} does not match its digest ({text}); refused",
                        reference.whole(),
                        layer.digest
                    ))
                } else {
                    OciError::Registry {
                        registry: self.name.clone(),
                        message: text,
                    }
                }
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(OciError::TooLarge {
                    reference: reference.whole(),
                    size: (bytes.len() + chunk.len()) as u64,
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        // Checked here as well, so a registry that ends the stream early
        // or a client that skipped verification cannot slip bytes through.
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != layer.digest {
            return Err(OciError::DigestMismatch(format!(
                "{}: layer {} hashes to {actual}; refused",
                reference.whole(),
                layer.digest
            )));
        }
        Ok(Pulled { bytes, digest })
    }

    /// Pushes `component` as a WebAssembly artifact under `reference`'s
    /// tag; returns the manifest digest.
    pub async fn push(&self, reference: &Reference, component: &[u8]) -> Result<String, OciError> {
        if reference.digest().is_some() {
            return Err(OciError::InvalidReference(format!(
                "{}: push to a tag (name:version), not a digest",
                reference.whole()
            )));
        }
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.error(reference, e))?;
        let config = Config {
            data: serde_json::to_vec(&wasm_config(component)).unwrap_or_default(),
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            annotations: None,
        };
        let layer = ImageLayer {
            data: component.to_vec(),
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            annotations: None,
        };
        let layer_descriptor = OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: layer.sha256_digest(),
            size: i64::try_from(component.len()).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let config_descriptor = OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config.sha256_digest(),
            size: i64::try_from(config.data.len()).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.created".to_owned(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: config_descriptor,
            layers: vec![layer_descriptor],
            subject: None,
            artifact_type: Some(CONFIG_MEDIA_TYPE.to_owned()),
            annotations: Some(annotations),
        };
        for (data, digest) in [
            (&config.data, config.sha256_digest()),
            (&layer.data, layer.sha256_digest()),
        ] {
            self.client
                .push_blob(reference, data, &digest)
                .await
                .map_err(|e| self.error(reference, e))?;
        }
        let manifest = OciManifest::Image(manifest);
        self.client
            .push_manifest(reference, &manifest)
            .await
            .map_err(|e| self.error(reference, e))?;
        // The digest of the manifest as pushed: what `name@digest` pins.
        self.client
            .fetch_manifest_digest(reference, &self.auth)
            .await
            .map_err(|e| self.error(reference, e))
    }
}

/// The one `application/wasm` layer of a WebAssembly artifact.
fn wasm_layer(
    manifest: &OciImageManifest,
    reference: &Reference,
) -> Result<OciDescriptor, OciError> {
    let mut layers = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == LAYER_MEDIA_TYPE);
    match (layers.next(), layers.next()) {
        (Some(layer), None) => Ok(layer.clone()),
        (None, _) => Err(OciError::NotWasm(format!(
            "{} is not a WebAssembly component artifact: no layer of media type {LAYER_MEDIA_TYPE} (config {}, layers {})",
            reference.whole(),
            manifest.config.media_type,
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (Some(_), Some(_)) => Err(OciError::NotWasm(format!(
            "{} has several {LAYER_MEDIA_TYPE} layers; a plugin is one component",
            reference.whole()
        ))),
    }
}

/// The artifact config of the conventions: `architecture`, `os`,
/// `layerDigests` (and `created`); the component's WIT world is optional
/// there and left out.
fn wasm_config(component: &[u8]) -> Value {
    json!({
        "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [format!("sha256:{}", hex::encode(Sha256::digest(component)))],
    })
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// `user` and `password` for `registry` from the Docker config file, if it
/// has an inline `auths` entry for it.
fn docker_credentials(registry: &str) -> Result<Option<(String, String)>, OciError> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(OciError::Credentials(format!(
                "reading {}: {e}",
                path.display()
            )));
        }
    };
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| OciError::Credentials(format!("{} is not JSON: {e}", path.display())))?;
    credentials_in(&config, registry)
        .map_err(|why| OciError::Credentials(format!("{}: {why}", path.display())))
}

/// The `auths` entry for `registry` in a Docker config document. Keys may
/// be `host[:port]` or a URL (`https://host/v1/`); Docker Hub is also
/// `index.docker.io`.
fn credentials_in(config: &Value, registry: &str) -> Result<Option<(String, String)>, String> {
    let Some(auths) = config["auths"].as_object() else {
        return Ok(None);
    };
    let wanted = canonical_registry(registry);
    let Some(entry) = auths
        .iter()
        .find(|(key, _)| canonical_registry(key) == wanted)
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the `auth` of {registry} is not base64: {e}"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("the `auth` of {registry} is not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| format!("the `auth` of {registry} is not base64 of user:password"))?;
        return Ok(Some((user.to_owned(), password.to_owned())));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(user), Some(password)) => Ok(Some((user.to_owned(), password.to_owned()))),
        _ => Ok(None),
    }
}

fn canonical_registry(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_name_a_registry_and_a_sha256_digest() {
        let good = [
            ("oci://127.0.0.1:5000/ns/echo:1.0.0", "127.0.0.1", "ns/echo"),
            (
                "ghcr.io/acme/plugins/echo:2",
                "ghcr.io",
                "acme/plugins/echo",
            ),
            ("localhost/echo:1", "localhost", "echo"),
        ];
        for (text, host, repository) in good {
            let r = parse_reference(text).unwrap();
            assert_eq!(registry_host(&r), host, "{text}");
            assert_eq!(r.repository(), repository, "{text}");
        }
        let digest = format!("127.0.0.1:5000/ns/echo@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_reference(&digest).unwrap().digest(),
            Some(format!("sha256:{}", "a".repeat(64)).as_str())
        );
        for bad in ["echo:1", "ns/echo:1", "", "127.0.0.1:5000/ns/echo@md5:abc"] {
            assert!(
                matches!(parse_reference(bad), Err(OciError::InvalidReference(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_allow_list_matches_hosts_and_host_port_pairs() {
        let r = parse_reference("127.0.0.1:5000/ns/echo:1").unwrap();
        assert!(registry_allowed(&r, &["127.0.0.1".into()]));
        assert!(registry_allowed(&r, &["127.0.0.1:5000".into()]));
        assert!(!registry_allowed(&r, &["127.0.0.1:5001".into()]));
        assert!(!registry_allowed(&r, &["ghcr.io".into()]));
        assert!(!registry_allowed(&r, &[]));
    }

    #[test]
    fn docker_config_entries_by_auth_or_username() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config = json!({"auths": {
            "127.0.0.1:5000": {"auth": auth},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "ghcr.io": {"auth": "not base64!"},
            "quay.io": {"identitytoken": "x"},
        }});
        assert_eq!(
            credentials_in(&config, "127.0.0.1:5000").unwrap(),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            credentials_in(&config, "docker.io").unwrap(),
            Some(("bob".into(), "pw".into()))
        );
        assert!(credentials_in(&config, "ghcr.io").is_err());
        assert_eq!(credentials_in(&config, "quay.io").unwrap(), None);
        assert_eq!(credentials_in(&config, "127.0.0.1:5001").unwrap(), None);
        assert_eq!(credentials_in(&json!({}), "ghcr.io").unwrap(), None);
    }
}
