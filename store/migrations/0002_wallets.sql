-- Key quorums (package custody owns their meaning). A wallet owned by a
-- single key or user gets an implicit one-member quorum, as Privy does.
CREATE TABLE key_quorums (
    id           TEXT    PRIMARY KEY,
    app_id       TEXT    NOT NULL,
    display_name TEXT,
    threshold    INTEGER NOT NULL CHECK (threshold >= 1),
    implicit     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,       -- Unix ms
    deleted_at   INTEGER                 -- set when deleted; the row stays for the audit
) STRICT;
CREATE INDEX key_quorums_app ON key_quorums(app_id, created_at, id);

-- Members of a quorum: exactly one of public_key, user_id, child_id per row.
CREATE TABLE key_quorum_members (
    quorum_id    TEXT NOT NULL REFERENCES key_quorums(id),
    position     INTEGER NOT NULL,
    public_key   TEXT,                   -- canonical base64 DER SPKI
    key_name     TEXT,
    user_id      TEXT,
    child_id     TEXT REFERENCES key_quorums(id),
    PRIMARY KEY (quorum_id, position),
    CHECK ((public_key IS NOT NULL) + (user_id IS NOT NULL) + (child_id IS NOT NULL) = 1)
) STRICT;
CREATE INDEX key_quorum_members_child ON key_quorum_members(child_id);

CREATE TABLE wallets (
    id                 TEXT    PRIMARY KEY,
    app_id             TEXT    NOT NULL,
    chain_type         TEXT    NOT NULL,
    address            TEXT    NOT NULL,  -- EIP-55 checksummed
    public_key         TEXT    NOT NULL,  -- compressed secp256k1 point, 0x hex
    owner_id           TEXT    REFERENCES key_quorums(id),
    policy_ids         TEXT    NOT NULL DEFAULT '[]',  -- JSON array
    additional_signers TEXT    NOT NULL DEFAULT '[]',  -- JSON array of {signer_id, override_policy_ids}
    display_name       TEXT,
    external_id        TEXT,
    sealed_entropy     BLOB    NOT NULL,  -- keys.Backend sealed, purpose wallet, aad = id + "/entropy"
    sealed_key         BLOB    NOT NULL,  -- keys.Backend sealed, purpose wallet, aad = id + "/key"
    key_generation     INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    archived_at        INTEGER,
    exported_at        INTEGER,
    imported_at        INTEGER
) STRICT;
CREATE INDEX wallets_app ON wallets(app_id, created_at, id);
CREATE UNIQUE INDEX wallets_external_id ON wallets(app_id, external_id) WHERE external_id IS NOT NULL;

-- Idempotency keys: one execution per (app, key) for 24 hours; the stored
-- response is returned for the same request, a different request is refused.
CREATE TABLE idempotency_keys (
    app_id       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash BLOB    NOT NULL,
    response     BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)
) STRICT;

-- Digests of accepted signed requests, kept until they could no longer be
-- accepted anyway, so a signed request runs at most once.
CREATE TABLE replay_digests (
    digest     BLOB    PRIMARY KEY,
    expires_at INTEGER NOT NULL           -- Unix ms
) STRICT;
CREATE INDEX replay_digests_expiry ON replay_digests(expires_at);
