//! Workflow definitions: create, new draft versions, publish (immutable
//! afterwards), archive, clone, and lookups by `latest`, `published` or an
//! exact version.

use std::sync::Arc;

use super::{Definition, Engine, EngineError, lock};
use crate::db::DbError;
use crate::db::{self, workflows::Version, workflows::Workflow};

/// A stored version with its parsed definition.
#[derive(Debug, Clone)]
pub struct WorkflowVersion {
    pub workflow: Workflow,
    pub version: Version,
    pub definition: Arc<Definition>,
    /// Every version of the workflow, newest first (for listings).
    pub versions: Vec<Version>,
}

/// Which version a lookup wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Published,
    Exact(semver::Version),
}

impl Selector {
    pub fn parse(text: Option<&str>) -> Result<Self, EngineError> {
        match text {
            None | Some("latest") => Ok(Self::Latest),
            Some("published") => Ok(Self::Published),
            Some(v) => semver::Version::parse(v).map(Self::Exact).map_err(|e| {
                EngineError::InvalidInput(format!(
                    "version {v:?} is not latest, published or a semver version: {e}"
                ))
            }),
        }
    }
}

impl Engine {
    /// Creates workflow `definition.key` at version 0.1.0 (draft).
    pub async fn create_workflow(
        &self,
        tenant: &str,
        mut definition: Definition,
    ) -> Result<WorkflowVersion, EngineError> {
        definition
            .validate(&self.plugins, tenant)
            .map_err(EngineError::InvalidDefinition)?;
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        db::lock(&mut tx, &definition_lock(tenant, &definition.key)).await?;
        if db::workflows::get(&mut tx, tenant, &definition.key)
            .await?
            .is_some()
        {
            return Err(EngineError::Conflict(format!(
                "workflow {:?} exists; PUT /v1/workflows/{} adds a version",
                definition.key, definition.key
            )));
        }
        let workflow = Workflow {
            tenant_id: tenant.to_owned(),
            key: definition.key.clone(),
            name: definition.name.clone(),
            description: definition.description.clone(),
            archived_at: None,
            created_at: now,
            updated_at: now,
        };
        db::workflows::insert(&mut tx, &workflow).await?;
        let version = Version {
            key: definition.key.clone(),
            version: semver::Version::new(0, 1, 0),
            status: "draft".into(),
            definition: serde_json::to_string(&definition).map_err(DbError::from)?,
            created_at: now,
            published_at: None,
        };
        db::workflows::insert_version(&mut tx, tenant, &version).await?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(WorkflowVersion {
            workflow,
            versions: vec![version.clone()],
            version,
            definition: Arc::new(definition),
        })
    }

    /// Adds a draft version: `version` if given (it must be newer than every
    /// existing one), else the next minor version of the newest.
    pub async fn put_workflow(
        &self,
        tenant: &str,
        key: &str,
        mut definition: Definition,
        version: Option<semver::Version>,
    ) -> Result<WorkflowVersion, EngineError> {
        if definition.key != key {
            return Err(EngineError::InvalidInput(format!(
                "the body's key {:?} differs from the path's {key:?}",
                definition.key
            )));
        }
        definition
            .validate(&self.plugins, tenant)
            .map_err(EngineError::InvalidDefinition)?;
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        db::lock(&mut tx, &definition_lock(tenant, key)).await?;
        let mut workflow = db::workflows::get(&mut tx, tenant, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow {key:?}")))?;
        let mut versions = db::workflows::versions(&mut tx, tenant, key).await?;
        let newest = versions.first();
        let next = match (version, newest) {
            (Some(v), Some(n)) if v <= n.version => {
                return Err(EngineError::Conflict(format!(
                    "version {v} is not newer than {}",
                    n.version
                )));
            }
            (Some(v), _) => v,
            (None, Some(n)) => semver::Version::new(n.version.major, n.version.minor + 1, 0),
            (None, None) => semver::Version::new(0, 1, 0),
        };
        let version = Version {
            key: key.to_owned(),
            version: next,
            status: "draft".into(),
            definition: serde_json::to_string(&definition).map_err(DbError::from)?,
            created_at: now,
            published_at: None,
        };
        db::workflows::insert_version(&mut tx, tenant, &version).await?;
        db::workflows::update_meta(
            &mut tx,
            tenant,
            key,
            &definition.name,
            definition.description.as_deref(),
            now,
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        workflow.name = definition.name.clone();
        workflow.description = definition.description.clone();
        workflow.updated_at = now;
        versions.insert(0, version.clone());
        Ok(WorkflowVersion {
            workflow,
            version,
            definition: Arc::new(definition),
            versions,
        })
    }

    pub async fn get_workflow(
        &self,
        tenant: &str,
        key: &str,
        selector: &Selector,
    ) -> Result<WorkflowVersion, EngineError> {
        let mut conn = self.db.reader().await?;
        let workflow = db::workflows::get(&mut conn, tenant, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow {key:?}")))?;
        let versions = db::workflows::versions(&mut conn, tenant, key).await?;
        let version = match selector {
            Selector::Latest => versions.first(),
            Selector::Published => versions.iter().find(|v| v.status == "published"),
            Selector::Exact(wanted) => versions.iter().find(|v| &v.version == wanted),
        }
        .cloned()
        .ok_or_else(|| match selector {
            Selector::Latest => EngineError::NotFound(format!("a version of workflow {key:?}")),
            Selector::Published => {
                EngineError::NotFound(format!("a published version of workflow {key:?}"))
            }
            Selector::Exact(v) => EngineError::NotFound(format!("version {v} of workflow {key:?}")),
        })?;
        let definition = self.definition_of(tenant, &version)?;
        Ok(WorkflowVersion {
            workflow,
            version,
            definition,
            versions,
        })
    }

    /// The parsed definition of a stored version, cached: versions never change.
    pub(crate) fn definition_of(
        &self,
        tenant: &str,
        version: &Version,
    ) -> Result<Arc<Definition>, EngineError> {
        let cache_key = (
            tenant.to_owned(),
            version.key.clone(),
            version.version.to_string(),
        );
        // A version's definition never changes (publishing only flips its status).
        if let Some(found) = lock(&self.definitions).get(&cache_key) {
            return Ok(found.clone());
        }
        let definition: Definition =
            serde_json::from_str(&version.definition).map_err(DbError::from)?;
        let definition = Arc::new(definition);
        lock(&self.definitions).insert(cache_key, definition.clone());
        Ok(definition)
    }

    pub async fn workflow_versions(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<(Workflow, Vec<Version>), EngineError> {
        let mut conn = self.db.reader().await?;
        let workflow = db::workflows::get(&mut conn, tenant, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow {key:?}")))?;
        let versions = db::workflows::versions(&mut conn, tenant, key).await?;
        Ok((workflow, versions))
    }

    pub async fn list_workflows(
        &self,
        tenant: &str,
        q: Option<&str>,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Workflow, Vec<Version>)>, EngineError> {
        if let Some(s) = status
            && !["draft", "published", "archived"].contains(&s)
        {
            return Err(EngineError::InvalidInput(format!(
                "status {s:?} is not draft, published or archived"
            )));
        }
        let mut conn = self.db.reader().await?;
        let workflows = db::workflows::list(&mut conn, tenant, q, status, cursor, limit).await?;
        let mut out = Vec::with_capacity(workflows.len());
        for w in workflows {
            let versions = db::workflows::versions(&mut conn, tenant, &w.key).await?;
            out.push((w, versions));
        }
        Ok(out)
    }

    pub async fn publish_workflow(
        &self,
        tenant: &str,
        key: &str,
        version: &semver::Version,
    ) -> Result<WorkflowVersion, EngineError> {
        let mut tx = self.db.begin().await?;
        db::lock(&mut tx, &definition_lock(tenant, key)).await?;
        let versions = db::workflows::versions(&mut tx, tenant, key).await?;
        if versions.is_empty() {
            return Err(EngineError::NotFound(format!("workflow {key:?}")));
        }
        let found = versions
            .iter()
            .find(|v| &v.version == version)
            .ok_or_else(|| {
                EngineError::NotFound(format!("version {version} of workflow {key:?}"))
            })?;
        if found.status == "published" {
            return Err(EngineError::Conflict(format!(
                "version {version} of {key:?} is already published"
            )));
        }
        db::workflows::publish(&mut tx, tenant, key, &version.to_string(), db::now_ms()).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.get_workflow(tenant, key, &Selector::Exact(version.clone()))
            .await
    }

    pub async fn set_archived(
        &self,
        tenant: &str,
        key: &str,
        archived: bool,
    ) -> Result<Workflow, EngineError> {
        let mut tx = self.db.begin().await?;
        db::lock(&mut tx, &definition_lock(tenant, key)).await?;
        let workflow = db::workflows::get(&mut tx, tenant, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow {key:?}")))?;
        if archived == workflow.archived_at.is_some() {
            return Err(EngineError::Conflict(format!(
                "workflow {key:?} is {}archived",
                if archived { "already " } else { "not " }
            )));
        }
        let at = archived.then(db::now_ms);
        db::workflows::set_archived(&mut tx, tenant, key, at).await?;
        let workflow = db::workflows::get(&mut tx, tenant, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow {key:?}")))?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(workflow)
    }

    /// Copies the newest version of `key` as version 0.1.0 (draft) of `new_key`.
    pub async fn clone_workflow(
        &self,
        tenant: &str,
        key: &str,
        new_key: &str,
    ) -> Result<WorkflowVersion, EngineError> {
        let source = self.get_workflow(tenant, key, &Selector::Latest).await?;
        let mut definition = (*source.definition).clone();
        definition.key = new_key.to_owned();
        self.create_workflow(tenant, definition).await
    }
}

/// The advisory lock of a workflow's definition and versions (Postgres):
/// held by each change, so two hosts changing one workflow at once do one
/// after the other (a version number is read, then the next one written).
fn definition_lock(tenant: &str, key: &str) -> String {
    format!("definition:{tenant}/{key}")
}
