//! The plugins a tenant can use, and what each may do there.
//!
//! - Shared plugins: the built-ins embedded in the binary and any the
//!   operator adds with `--plugin-dir`, loaded once at start, seen by every
//!   tenant under their bare name.
//! - Uploaded plugins: a tenant's own (bare name), and other tenants'
//!   public ones, named `publisher/name`. Loaded from the database at start
//!   and added on upload; yanked versions stay for runs pinned to them.
//! - Grants: a tenant's decision per plugin (`name` or `publisher/name`),
//!   cached here and written through by the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use semver::Version;

use crate::runtime::{Grants, LoadError, Plugin, Runtime};

/// Who besides the publisher sees an uploaded plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Private,
    /// Listed in every tenant's catalog as `publisher/name`.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "private" => Some(Self::Private),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// An uploaded plugin version and how it is listed.
#[derive(Debug, Clone)]
pub struct Listing {
    pub plugin: Arc<Plugin>,
    pub tenant_id: String,
    /// The publishing tenant's name.
    pub publisher: String,
    pub visibility: Visibility,
    pub yanked: bool,
    pub created_at: i64,
    /// Where it was pulled from, if from an OCI registry.
    pub oci: Option<OciSource>,
}

/// The OCI artifact a plugin version was pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// The reference as given: by tag or by digest.
    pub reference: String,
    /// The manifest digest (`sha256:…`) it was pinned to when stored.
    pub digest: String,
}

/// A plugin version as one tenant sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub plugin: Arc<Plugin>,
    /// How this tenant names it: `name`, or `publisher/name` for another
    /// tenant's plugin.
    pub name: String,
    /// `None` for shared plugins.
    pub listing: Option<Listing>,
}

impl Entry {
    pub fn builtin(&self) -> bool {
        self.listing.is_none()
    }

    pub fn yanked(&self) -> bool {
        self.listing.as_ref().is_some_and(|l| l.yanked)
    }

    /// The exact reference a definition pins: `name@1.2.3` or
    /// `publisher/name@1.2.3`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.name, self.plugin.info.version)
    }
}

type Versions<T> = BTreeMap<Version, T>;

#[derive(Default)]
struct Uploads {
    /// tenant id → plugin name → version → listing.
    by_tenant: HashMap<String, BTreeMap<String, Versions<Listing>>>,
    /// Publisher (tenant) name → tenant id, to resolve `publisher/name`.
    publishers: HashMap<String, String>,
}

#[derive(Default)]
pub struct Plugins {
    /// name → version → plugin, for plugins every tenant sees.
    shared: RwLock<BTreeMap<String, Versions<Arc<Plugin>>>>,
    uploads: RwLock<Uploads>,
    /// (tenant id, `name` or `publisher/name`) → what the tenant granted.
    grants: RwLock<HashMap<(String, String), Grants>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Plugins {
    /// Loads a component for every tenant.
    pub async fn add_shared(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
    ) -> Result<Arc<Plugin>, LoadError> {
        let plugin = runtime.load(bytes).await?;
        write(&self.shared)
            .entry(plugin.info.name.clone())
            .or_default()
            .insert(plugin.info.version.clone(), plugin.clone());
        Ok(plugin)
    }

    /// Whether `name` is a shared plugin (tenants may not upload one by
    /// that name).
    pub fn is_shared(&self, name: &str) -> bool {
        read(&self.shared).contains_key(name)
    }

    /// Adds (or replaces) an uploaded plugin version.
    pub fn add_uploaded(&self, listing: Listing) {
        let mut uploads = write(&self.uploads);
        uploads
            .publishers
            .insert(listing.publisher.clone(), listing.tenant_id.clone());
        uploads
            .by_tenant
            .entry(listing.tenant_id.clone())
            .or_default()
            .entry(listing.plugin.info.name.clone())
            .or_default()
            .insert(listing.plugin.info.version.clone(), listing);
    }

    /// Changes one of `tenant`'s own versions; `None` if it has no such one.
    pub fn update_uploaded(
        &self,
        tenant: &str,
        name: &str,
        version: &Version,
        change: impl FnOnce(&mut Listing),
    ) -> Option<Entry> {
        let mut uploads = write(&self.uploads);
        let listing = uploads
            .by_tenant
            .get_mut(tenant)?
            .get_mut(name)?
            .get_mut(version)?;
        change(listing);
        Some(Entry {
            plugin: listing.plugin.clone(),
            name: name.to_owned(),
            listing: Some(listing.clone()),
        })
    }

    /// Every plugin a tenant can use, newest version of each first: shared
    /// ones, its own (yanked ones marked), then others' public ones.
    pub fn catalog(&self, tenant: &str) -> Vec<Entry> {
        let mut entries: Vec<Entry> = read(&self.shared)
            .iter()
            .flat_map(|(name, versions)| {
                versions.values().rev().map(|p| Entry {
                    plugin: p.clone(),
                    name: name.clone(),
                    listing: None,
                })
            })
            .collect();
        let uploads = read(&self.uploads);
        if let Some(own) = uploads.by_tenant.get(tenant) {
            for (name, versions) in own {
                entries.extend(versions.values().rev().map(|l| Entry {
                    plugin: l.plugin.clone(),
                    name: name.clone(),
                    listing: Some(l.clone()),
                }));
            }
        }
        let mut foreign: Vec<Entry> = uploads
            .by_tenant
            .iter()
            .filter(|(owner, _)| owner.as_str() != tenant)
            .flat_map(|(_, plugins)| plugins.iter())
            .flat_map(|(name, versions)| {
                versions
                    .values()
                    .rev()
                    .filter(|l| l.visibility == Visibility::Public && !l.yanked)
                    .map(move |l| Entry {
                        plugin: l.plugin.clone(),
                        name: format!("{}/{name}", l.publisher),
                        listing: Some(l.clone()),
                    })
            })
            .collect();
        // Stable order: by name, newest version first.
        foreign.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| b.plugin.info.version.cmp(&a.plugin.info.version))
        });
        entries.extend(foreign);
        entries
    }

    /// Every version of `reference` (`name` or `publisher/name`) this
    /// tenant may see, yanked ones included, oldest first; `None` if it
    /// sees none.
    pub fn versions(&self, tenant: &str, reference: &str) -> Option<Vec<Entry>> {
        let entries: Vec<Entry> = match reference.split_once('/') {
            Some((publisher, name)) => {
                let uploads = read(&self.uploads);
                let owner = uploads.publishers.get(publisher)?;
                let own = owner == tenant;
                let shown = if own {
                    name.to_owned()
                } else {
                    reference.to_owned()
                };
                uploads
                    .by_tenant
                    .get(owner)?
                    .get(name)?
                    .values()
                    .filter(|l| own || l.visibility == Visibility::Public)
                    .map(|l| Entry {
                        plugin: l.plugin.clone(),
                        name: shown.clone(),
                        listing: Some(l.clone()),
                    })
                    .collect()
            }
            None => {
                if let Some(versions) = read(&self.shared).get(reference) {
                    versions
                        .values()
                        .map(|p| Entry {
                            plugin: p.clone(),
                            name: reference.to_owned(),
                            listing: None,
                        })
                        .collect()
                } else {
                    read(&self.uploads)
                        .by_tenant
                        .get(tenant)?
                        .get(reference)?
                        .values()
                        .map(|l| Entry {
                            plugin: l.plugin.clone(),
                            name: reference.to_owned(),
                            listing: Some(l.clone()),
                        })
                        .collect()
                }
            }
        };
        (!entries.is_empty()).then_some(entries)
    }

    /// Resolves `name`, `name@1`, `name@1.2`, `name@1.2.3` (or the same
    /// with `publisher/`) to the newest matching version that is not
    /// yanked; the error says what is missing.
    pub fn resolve(&self, tenant: &str, uses: &str) -> Result<Entry, String> {
        let (reference, requirement) = match uses.split_once('@') {
            Some((reference, version)) => {
                let requirement = semver::VersionReq::parse(version).map_err(|e| {
                    format!("uses {uses:?}: {version:?} is not a version or range: {e}")
                })?;
                (reference, requirement)
            }
            None => (uses, semver::VersionReq::STAR),
        };
        let versions = self
            .versions(tenant, reference)
            .ok_or_else(|| format!("uses unknown plugin {reference:?}"))?;
        let usable: Vec<&Entry> = versions.iter().filter(|e| !e.yanked()).collect();
        usable
            .iter()
            .rev()
            .find(|e| requirement.matches(&e.plugin.info.version))
            .map(|e| (*e).clone())
            .ok_or_else(|| {
                let known: Vec<String> = usable
                    .iter()
                    .map(|e| e.plugin.info.version.to_string())
                    .collect();
                let yanked = versions.len() - usable.len();
                format!(
                    "no version of plugin {reference:?} matches {requirement} (available: {}{})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                    if yanked > 0 {
                        format!("; {yanked} yanked")
                    } else {
                        String::new()
                    }
                )
            })
    }

    /// The exact version a stored definition pinned (`name@1.2.3` or
    /// `publisher/name@1.2.3`), yanked or not.
    pub fn exact_entry(&self, tenant: &str, pinned: &str) -> Option<Entry> {
        let (reference, version) = pinned.split_once('@')?;
        let version = Version::parse(version).ok()?;
        self.versions(tenant, reference)?
            .into_iter()
            .find(|e| e.plugin.info.version == version)
    }

    /// The exact plugin a stored definition pinned.
    pub fn exact(&self, tenant: &str, pinned: &str) -> Option<Arc<Plugin>> {
        self.exact_entry(tenant, pinned).map(|e| e.plugin)
    }

    /// What the tenant granted `key` (`name` or `publisher/name`) itself.
    pub fn tenant_grants(&self, tenant: &str, key: &str) -> Grants {
        read(&self.grants)
            .get(&(tenant.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Caches a tenant's decision (the engine stores it first).
    pub fn set_grants(&self, tenant: &str, key: &str, grants: Grants) {
        write(&self.grants).insert((tenant.to_owned(), key.to_owned()), grants);
    }

    /// What `plugin`, pinned as `pinned`, may use in a tenant. Shared
    /// plugins get what they ask for, except a wildcard host or secret,
    /// plus what the tenant granted; uploaded ones get only what the tenant
    /// granted.
    pub fn grants(&self, tenant: &str, pinned: &str, plugin: &Plugin) -> Grants {
        let key = pinned.split_once('@').map_or(pinned, |(key, _)| key);
        let granted = self.tenant_grants(tenant, key);
        if key.contains('/') || !self.is_shared(key) {
            return granted;
        }
        let mut grants = Grants::requested(&plugin.info.capabilities);
        grants.allowed_hosts.retain(|h| !h.contains('*'));
        grants.secrets.retain(|s| s != "*");
        merge(grants, granted)
    }
}

/// `a` with everything `b` allows added.
fn merge(mut a: Grants, b: Grants) -> Grants {
    for host in b.allowed_hosts {
        if !a.allowed_hosts.contains(&host) {
            a.allowed_hosts.push(host);
        }
    }
    for secret in b.secrets {
        if !a.secrets.contains(&secret) {
            a.secrets.push(secret);
        }
    }
    a.mail |= b.mail;
    a.kv |= b.kv;
    a.files |= b.files;
    a.notify |= b.notify;
    a
}

/// The requested capabilities (`http:host`, `secret:NAME`, `mail`, `kv`,
/// `files`) that `granted` does not cover.
pub fn ungranted(requested: &[String], granted: &Grants) -> Vec<String> {
    requested
        .iter()
        .filter(|capability| match capability.split_once(':') {
            Some(("http", host)) => !granted
                .allowed_hosts
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(host)),
            Some(("secret", name)) => !granted.secrets.iter().any(|s| s == "*" || s == name),
            _ => match capability.as_str() {
                "mail" => !granted.mail,
                "kv" => !granted.kv,
                "files" => !granted.files,
                "notify" => !granted.notify,
                _ => false,
            },
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ungranted_lists_what_the_grants_do_not_cover() {
        let requested: Vec<String> = ["kv", "mail", "http:*", "http:api.test", "secret:*", "files"]
            .map(String::from)
            .to_vec();
        let cases = [
            (Grants::default(), requested.clone()),
            (Grants::all(), vec![]),
            (
                Grants {
                    allowed_hosts: vec!["API.test".into()],
                    secrets: vec!["TOKEN".into()],
                    mail: true,
                    kv: true,
                    files: false,
                    notify: false,
                },
                ["http:*", "secret:*", "files"].map(String::from).to_vec(),
            ),
        ];
        for (granted, expected) in cases {
            assert_eq!(ungranted(&requested, &granted), expected, "{granted:?}");
        }
    }

    #[test]
    fn merge_adds_without_duplicates() {
        let a = Grants {
            allowed_hosts: vec!["a.test".into()],
            secrets: vec!["S".into()],
            ..Grants::default()
        };
        let b = Grants {
            allowed_hosts: vec!["a.test".into(), "b.test".into()],
            mail: true,
            ..Grants::default()
        };
        let merged = merge(a, b);
        assert_eq!(merged.allowed_hosts, ["a.test", "b.test"]);
        assert_eq!(merged.secrets, ["S"]);
        assert!(merged.mail && !merged.kv);
    }
}
