-- A plugin version pulled from an OCI registry keeps where it came from:
-- the reference as given (a tag or a digest) and the manifest digest it
-- was pinned to. Both are NULL for uploaded components.
ALTER TABLE plugins ADD COLUMN oci_reference TEXT;
ALTER TABLE plugins ADD COLUMN oci_digest TEXT;
