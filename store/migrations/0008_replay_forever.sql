-- A signed request is accepted at most once for the lifetime of the store.
-- A request with privy-request-expiry is refused after its expiry anyway, so
-- its digest is kept until then (plus a margin for clock steps); one without
-- an expiry never stops being valid, so its digest is kept forever
-- (expires_at NULL). Before this migration digests of requests without an
-- expiry were purged after api.max_request_expiry, and the rows do not say
-- which they were: every digest already here is kept forever.
--
-- WITHOUT ROWID keeps one B-tree keyed by the 32-byte digest (about 45 bytes
-- a request on disk), and the partial index covers only the rows the purge
-- can ever delete.
CREATE TABLE replay_digests_v2 (
    digest     BLOB    PRIMARY KEY,
    expires_at INTEGER                    -- Unix ms; NULL: never purged
) STRICT, WITHOUT ROWID;
INSERT INTO replay_digests_v2(digest, expires_at) SELECT digest, NULL FROM replay_digests;
DROP TABLE replay_digests;
ALTER TABLE replay_digests_v2 RENAME TO replay_digests;
CREATE INDEX replay_digests_expiry ON replay_digests(expires_at) WHERE expires_at IS NOT NULL;
