-- Appliance facts: root fingerprint, key generation, ceremony parameters,
-- backend identity. Never secrets.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The hash-chained audit log (package audit owns its meaning). seq is
-- assigned by the writer, contiguous from 1; ts is Unix nanoseconds.
CREATE TABLE audit_records (
    seq            INTEGER PRIMARY KEY,
    ts             INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    decision       TEXT    NOT NULL,
    request_digest BLOB,
    result_digest  BLOB,
    detail         TEXT    NOT NULL DEFAULT '',
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL
) STRICT;

CREATE INDEX audit_records_action ON audit_records(action, seq);
