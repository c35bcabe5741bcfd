-- Wrapped backups of the P-256 keys of key-format-2 generations (package
-- keys, WrappedKeys): the PKCS#8 key wrapped with RFC 5649 under the
-- generation's wrapping key, which only the hardware holds, and the public
-- point. Nothing here is secret in clear; a restore brings the keys back.
CREATE TABLE wrapped_keys (
    generation INTEGER NOT NULL,
    label      TEXT    NOT NULL,
    wrapped    BLOB    NOT NULL,
    public_key BLOB    NOT NULL,   -- uncompressed P-256 point
    created_at INTEGER NOT NULL,
    PRIMARY KEY (generation, label)
) STRICT;
