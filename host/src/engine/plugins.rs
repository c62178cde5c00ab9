//! The plugins a tenant can use: the built-ins embedded in the binary and
//! any the operator adds with `--plugin-dir`, loaded once at start.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::runtime::{Grants, LoadError, Plugin, Runtime};

#[derive(Default)]
pub struct Plugins {
    /// name → version → plugin, for plugins every tenant sees.
    shared: RwLock<BTreeMap<String, BTreeMap<semver::Version, Arc<Plugin>>>>,
}

impl Plugins {
    /// Loads a component for every tenant; returns its name and version.
    pub async fn add_shared(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
    ) -> Result<Arc<Plugin>, LoadError> {
        let plugin = runtime.load(bytes).await?;
        self.shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(plugin.info.name.clone())
            .or_default()
            .insert(plugin.info.version.clone(), plugin.clone());
        Ok(plugin)
    }

    /// Every plugin a tenant can use, newest version of each first.
    pub fn catalog(&self, _tenant: &str) -> Vec<Arc<Plugin>> {
        let shared = self
            .shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared
            .values()
            .flat_map(|versions| versions.values().rev().cloned())
            .collect()
    }

    /// Resolves `name`, `name@1`, `name@1.2` or `name@1.2.3` to the newest
    /// matching version; the error says what is missing.
    pub fn resolve(&self, _tenant: &str, uses: &str) -> Result<Arc<Plugin>, String> {
        let (name, requirement) = match uses.split_once('@') {
            Some((name, version)) => {
                let requirement = semver::VersionReq::parse(version).map_err(|e| {
                    format!("uses {uses:?}: {version:?} is not a version or range: {e}")
                })?;
                (name, requirement)
            }
            None => (uses, semver::VersionReq::STAR),
        };
        let shared = self
            .shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = shared
            .get(name)
            .ok_or_else(|| format!("uses unknown plugin {name:?}"))?;
        versions
            .iter()
            .rev()
            .find(|(v, _)| requirement.matches(v))
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                let known: Vec<String> = versions.keys().map(ToString::to_string).collect();
                format!(
                    "no version of plugin {name:?} matches {requirement} (available: {})",
                    known.join(", ")
                )
            })
    }

    /// The exact plugin a stored definition pinned (`name@1.2.3`).
    pub fn exact(&self, _tenant: &str, pinned: &str) -> Option<Arc<Plugin>> {
        let (name, version) = pinned.split_once('@')?;
        let version = semver::Version::parse(version).ok()?;
        let shared = self
            .shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.get(name)?.get(&version).cloned()
    }

    /// What a plugin may use in a tenant. Built-ins get what they ask for,
    /// except a wildcard outbound host, which must be granted.
    pub fn grants(&self, _tenant: &str, plugin: &Plugin) -> Grants {
        let mut grants = Grants::requested(&plugin.info.capabilities);
        grants.allowed_hosts.retain(|h| !h.contains('*'));
        grants.secrets.retain(|s| s != "*");
        grants
    }
}
