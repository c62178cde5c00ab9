-- Plugins uploaded by tenants, the marketplace and capability grants.

-- Component bytes by content hash: shared across tenants, stored once.
CREATE TABLE plugin_blobs (
    sha256  TEXT PRIMARY KEY,
    bytes   BLOB NOT NULL
);

CREATE TABLE plugins (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES plugin_blobs(sha256),
    size        INTEGER NOT NULL,
    visibility  TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
    info        TEXT NOT NULL,            -- JSON: what describe() returned at upload
    created_at  INTEGER NOT NULL,
    yanked_at   INTEGER,                  -- pinned runs keep it; new definitions cannot resolve it
    PRIMARY KEY (tenant_id, name, version)
);

-- A tenant's decision on what a plugin may use; `plugin` is `name` (a
-- built-in or the tenant's own) or `publisher/name`.
CREATE TABLE plugin_grants (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    plugin      TEXT NOT NULL,
    grants      TEXT NOT NULL,            -- JSON: {allowed_hosts, secrets, mail, kv, files}
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, plugin)
);
