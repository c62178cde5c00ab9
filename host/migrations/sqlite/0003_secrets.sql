-- Tenant secrets, encrypted at rest (ChaCha20-Poly1305; the key is the
-- operator's, outside the database). The ciphertext is bound to its tenant
-- and name, so rows cannot be swapped between tenants.
CREATE TABLE secrets (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    sealed      BLOB NOT NULL,             -- nonce (12 bytes) || ciphertext
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;
