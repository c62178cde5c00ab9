//! Plugins tenants upload: validation and storage on upload, yanking,
//! public listing, capability grants, and loading them all at start.
//!
//! Bytes are stored once per content hash; the registry in [`super::plugins`]
//! holds the loaded (compiled) plugin, so the first run is not slow.

use std::sync::Arc;

use crate::db::{self, Db, DbError};
use crate::runtime::{Grants, LoadError, Runtime};

use super::Engine;
use super::plugins::{Entry, Listing, OciSource, Plugins, Visibility, ungranted};
use crate::oci::{self, OciError};

/// Why a plugin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The upload is not a WebAssembly component at all.
    #[error("{0}")]
    NotAComponent(String),
    /// A component, but not a usable step plugin: names the missing or
    /// mismatched export or import, or what is wrong with `describe()`.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The tenant's plugin storage would exceed its quota.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The runtime could not compile or cache a valid component.
    #[error("loading the component: {0}")]
    Runtime(String),
    /// The operator has not allowed this OCI registry (`--oci-allow`).
    #[error("{0}")]
    RegistryNotAllowed(String),
    /// Pulling from an OCI registry failed or was refused.
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<LoadError> for PluginError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotAComponent(_) => Self::NotAComponent(e.to_string()),
            LoadError::WrongWorld(_) | LoadError::Describe(_) | LoadError::InvalidInfo(_) => {
                Self::Invalid(e.to_string())
            }
            LoadError::Cache(_) | LoadError::Engine(_) => Self::Runtime(e.to_string()),
        }
    }
}

/// A tenant's grants for one plugin, with what the plugin asks for.
#[derive(Debug, Clone)]
pub struct GrantView {
    /// `name` or `publisher/name`.
    pub plugin: String,
    /// What attempts get (for shared plugins: their own request, less
    /// wildcards, plus the tenant's grants).
    pub granted: Grants,
    /// The capabilities the newest version declares in `describe()`.
    pub requested: Vec<String>,
    /// Requested but not granted.
    pub ungranted: Vec<String>,
}

impl Engine {
    /// Validates, compiles, stores and lists a tenant's component.
    #[tracing::instrument(skip(self, bytes), fields(size = bytes.len()))]
    pub async fn upload_plugin(
        &self,
        tenant: &str,
        bytes: &[u8],
        visibility: Visibility,
    ) -> Result<Entry, PluginError> {
        self.store_plugin(tenant, bytes, visibility, None).await
    }

    /// Pulls a component from an OCI registry the operator allows, pinned
    /// to its manifest digest, then validates and stores it exactly as an
    /// upload (same limit, same checks, same answers).
    #[tracing::instrument(skip(self))]
    pub async fn plugin_from_oci(
        &self,
        tenant: &str,
        reference: &str,
        visibility: Visibility,
    ) -> Result<Entry, PluginError> {
        let parsed = oci::parse_reference(reference)?;
        if !oci::registry_allowed(&parsed, &self.config.oci.allow) {
            return Err(PluginError::RegistryNotAllowed(format!(
                "registry {} is not allowed on this server; the operator allows registries with `weft serve --oci-allow {}`",
                parsed.registry(),
                parsed.registry()
            )));
        }
        let registry = oci::Registry::for_reference(&parsed, &self.config.oci.registries)?;
        let pulled = registry.pull(&parsed, self.config.max_upload_bytes).await?;
        tracing::info!(tenant, reference = %parsed.whole(), digest = %pulled.digest, "plugin pulled");
        let source = OciSource {
            reference: parsed.whole(),
            digest: pulled.digest,
        };
        self.store_plugin(tenant, &pulled.bytes, visibility, Some(source))
            .await
    }

    async fn store_plugin(
        &self,
        tenant: &str,
        bytes: &[u8],
        visibility: Visibility,
        oci: Option<OciSource>,
    ) -> Result<Entry, PluginError> {
        let plugin = self.runtime.load(bytes).await?;
        let (name, version) = (&plugin.info.name, &plugin.info.version);
        if self.plugins.is_shared(name) {
            return Err(PluginError::Conflict(format!(
                "{name:?} is the name of a built-in plugin; choose another name in describe()"
            )));
        }
        let exists = || {
            PluginError::Conflict(format!(
                "plugin {name}@{version} already exists; bump the version to publish a change"
            ))
        };
        if self.plugins.versions(tenant, name).is_some_and(|versions| {
            versions
                .iter()
                .any(|e| !e.builtin() && e.plugin.info.version == *version)
        }) {
            return Err(exists());
        }
        let mut tx = self.db.begin().await?;
        // Uploads of one tenant one at a time across hosts: the quota is
        // read, then written.
        db::lock(&mut tx, &format!("plugins:{tenant}")).await?;
        let used = db::plugins::storage_used(&mut tx, tenant).await?;
        let quota = self.config.tenant_plugin_storage_bytes as i64;
        if used + bytes.len() as i64 > quota {
            return Err(PluginError::QuotaExceeded(format!(
                "this upload ({} bytes) would take the tenant's plugin storage to {} of {quota} bytes; yank or delete old versions",
                bytes.len(),
                used + bytes.len() as i64
            )));
        }
        let publisher = db::plugins::tenant_name(&mut tx, tenant)
            .await?
            .ok_or_else(|| PluginError::NotFound(format!("tenant {tenant}")))?;
        let created_at = db::now_ms();
        db::plugins::put_blob(&mut tx, &plugin.hash, bytes).await?;
        let row = db::plugins::PluginRow {
            tenant_id: tenant.to_owned(),
            publisher: publisher.clone(),
            name: name.clone(),
            version: version.to_string(),
            sha256: plugin.hash.clone(),
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            visibility: visibility.as_str().to_owned(),
            info: serde_json::to_string(&plugin.info).map_err(DbError::from)?,
            created_at,
            yanked_at: None,
            oci_reference: oci.as_ref().map(|o| o.reference.clone()),
            oci_digest: oci.as_ref().map(|o| o.digest.clone()),
        };
        match db::plugins::insert(&mut tx, &row).await {
            Err(e) if e.is_unique_violation() => return Err(exists()),
            other => other?,
        }
        tx.commit().await.map_err(DbError::from)?;
        let listing = Listing {
            plugin: plugin.clone(),
            tenant_id: tenant.to_owned(),
            publisher,
            visibility,
            yanked: false,
            created_at,
            oci,
        };
        self.plugins.add_uploaded(listing.clone());
        self.plugins_changed();
        tracing::info!(tenant, name = %name, version = %version, visibility = visibility.as_str(), "plugin uploaded");
        Ok(Entry {
            plugin: plugin.clone(),
            name: name.clone(),
            listing: Some(listing),
        })
    }

    /// Yanks one of the tenant's own versions: pinned runs keep it, new
    /// definitions cannot resolve it.
    pub async fn yank_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Entry, PluginError> {
        let parsed = own_version(name, version)?;
        let mut conn = self.db.writer().await?;
        if !db::plugins::yank(&mut conn, tenant, name, version, db::now_ms()).await? {
            return Err(PluginError::NotFound(format!("plugin {name}@{version}")));
        }
        self.plugins_changed();
        self.plugins
            .update_uploaded(tenant, name, &parsed, |l| l.yanked = true)
            .ok_or_else(|| PluginError::NotFound(format!("plugin {name}@{version}")))
    }

    /// Lists one of the tenant's own versions publicly, or stops listing it.
    pub async fn set_plugin_visibility(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        visibility: Visibility,
    ) -> Result<Entry, PluginError> {
        let parsed = own_version(name, version)?;
        let mut conn = self.db.writer().await?;
        if !db::plugins::set_visibility(&mut conn, tenant, name, version, visibility.as_str())
            .await?
        {
            return Err(PluginError::NotFound(format!("plugin {name}@{version}")));
        }
        self.plugins_changed();
        self.plugins
            .update_uploaded(tenant, name, &parsed, |l| l.visibility = visibility)
            .ok_or_else(|| PluginError::NotFound(format!("plugin {name}@{version}")))
    }

    /// The tenant's grants for a plugin it can see (`name` or
    /// `publisher/name`).
    pub fn plugin_grants(&self, tenant: &str, reference: &str) -> Result<GrantView, PluginError> {
        let versions = self
            .plugins
            .versions(tenant, reference)
            .ok_or_else(|| PluginError::NotFound(format!("plugin {reference:?}")))?;
        let newest = versions
            .last()
            .ok_or_else(|| PluginError::NotFound(format!("plugin {reference:?}")))?;
        let granted = self
            .plugins
            .grants(tenant, &newest.pinned(), &newest.plugin);
        let requested = newest.plugin.info.capabilities.clone();
        Ok(GrantView {
            plugin: newest.name.clone(),
            ungranted: ungranted(&requested, &granted),
            granted,
            requested,
        })
    }

    /// Stores the tenant's decision for a plugin it can see, replacing the
    /// previous one.
    pub async fn put_plugin_grants(
        &self,
        tenant: &str,
        reference: &str,
        grants: Grants,
    ) -> Result<GrantView, PluginError> {
        let key = self.plugin_grants(tenant, reference)?.plugin;
        for host in &grants.allowed_hosts {
            if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
                return Err(PluginError::Invalid(format!(
                    "allowed_hosts: {host:?} is not a host, host:port or *.domain"
                )));
            }
        }
        let text = serde_json::to_string(&grants).map_err(DbError::from)?;
        let mut conn = self.db.writer().await?;
        db::plugins::put_grants(&mut conn, tenant, &key, &text, db::now_ms()).await?;
        self.plugins.set_grants(tenant, &key, grants);
        self.plugins_changed();
        tracing::info!(tenant, plugin = %key, "plugin grants updated");
        self.plugin_grants(tenant, &key)
    }
}

fn own_version(name: &str, version: &str) -> Result<semver::Version, PluginError> {
    if name.contains('/') {
        // Another tenant's plugin, or the caller's own under its publisher
        // name: only the bare name addresses one's own plugins here.
        return Err(PluginError::NotFound(format!("plugin {name}@{version}")));
    }
    semver::Version::parse(version)
        .map_err(|_| PluginError::NotFound(format!("plugin {name}@{version}")))
}

/// Loads every stored plugin and grant into the registry, so uploads
/// survive restarts; again when another host changed them (Postgres). A stored component that no longer loads is skipped
/// with a warning (runs pinned to it fail with "not available").
pub async fn load_stored(db: &Db, runtime: &Runtime, plugins: &Plugins) -> Result<usize, DbError> {
    let mut conn = db.reader().await?;
    let rows = db::plugins::all(&mut conn).await?;
    let mut loaded = 0;
    for row in rows {
        // Known already (a reload on another host's change): only what may
        // change — yanked, visibility — without reading the bytes again.
        if let Ok(version) = semver::Version::parse(&row.version)
            && plugins
                .update_uploaded(&row.tenant_id, &row.name, &version, |l| {
                    l.visibility =
                        Visibility::parse(&row.visibility).unwrap_or(Visibility::Private);
                    l.yanked = row.yanked_at.is_some();
                })
                .is_some()
        {
            loaded += 1;
            continue;
        }
        let Some(bytes) = db::plugins::blob(&mut conn, &row.sha256).await? else {
            tracing::warn!(name = %row.name, version = %row.version, "stored plugin has no bytes; skipped");
            continue;
        };
        let plugin = match runtime.load(&bytes).await {
            Ok(plugin) => plugin,
            Err(e) => {
                tracing::warn!(name = %row.name, version = %row.version, error = %e, "stored plugin does not load; skipped");
                continue;
            }
        };
        if plugin.info.name != row.name || plugin.info.version.to_string() != row.version {
            tracing::warn!(name = %row.name, version = %row.version, "stored plugin now describes itself differently; skipped");
            continue;
        }
        plugins.add_uploaded(Listing {
            plugin: Arc::clone(&plugin),
            tenant_id: row.tenant_id,
            publisher: row.publisher,
            visibility: Visibility::parse(&row.visibility).unwrap_or(Visibility::Private),
            yanked: row.yanked_at.is_some(),
            created_at: row.created_at,
            oci: row
                .oci_reference
                .zip(row.oci_digest)
                .map(|(reference, digest)| OciSource { reference, digest }),
        });
        loaded += 1;
    }
    for row in db::plugins::all_grants(&mut conn).await? {
        match serde_json::from_str::<Grants>(&row.grants) {
            Ok(grants) => plugins.set_grants(&row.tenant_id, &row.plugin, grants),
            Err(e) => {
                tracing::warn!(tenant = %row.tenant_id, plugin = %row.plugin, error = %e, "unreadable grants; none applied")
            }
        }
    }
    Ok(loaded)
}
