-- A tenant's HS256 signing secret for JWT bearer tokens, sealed like other
-- secrets; NULL until the tenant creates one.
ALTER TABLE tenants ADD COLUMN jwt_secret BLOB;
