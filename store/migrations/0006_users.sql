-- Users of an app, known by the id their own identity provider gives them
-- (a custom_auth linked account), and the short-lived user keys issued for
-- their JWTs. A deleted user keeps its row for the audit; its custom id may
-- be given to a new user.
CREATE TABLE users (
    id                 TEXT    PRIMARY KEY,
    app_id             TEXT    NOT NULL,
    custom_user_id     TEXT    NOT NULL,
    custom_metadata    TEXT,                -- JSON object
    created_at         INTEGER NOT NULL,    -- Unix ms
    first_verified_at  INTEGER,             -- first JWT exchanged for a user key, Unix ms
    latest_verified_at INTEGER,
    deleted_at         INTEGER
) STRICT;
CREATE UNIQUE INDEX users_custom_id ON users(app_id, custom_user_id) WHERE deleted_at IS NULL;
CREATE INDEX users_app ON users(app_id, created_at);

-- User keys: only the public half is ever stored. A key approves for its
-- user until expires_at, unless revoked (the user was deleted, or the key
-- was pushed out by newer ones).
CREATE TABLE user_keys (
    public_key TEXT    PRIMARY KEY,         -- canonical base64 DER SPKI
    app_id     TEXT    NOT NULL,
    user_id    TEXT    NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX user_keys_user ON user_keys(user_id, expires_at);
CREATE INDEX key_quorum_members_user ON key_quorum_members(user_id) WHERE user_id IS NOT NULL;

-- Imported wallets: a private key has no entropy (sealed_entropy is empty),
-- an HD wallet may sit at another address index than 0.
ALTER TABLE wallets ADD COLUMN entropy_type TEXT NOT NULL DEFAULT 'hd' CHECK (entropy_type IN ('hd', 'private-key'));
ALTER TABLE wallets ADD COLUMN hd_index INTEGER NOT NULL DEFAULT 0 CHECK (hd_index >= 0 AND hd_index < 2147483648);
