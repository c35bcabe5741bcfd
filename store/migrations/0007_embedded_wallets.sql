-- Embedded wallets: the key lives on the user's device; its 16-byte entropy
-- is split 2-of-3 with Shamir. Cachet keeps the auth share sealed under the
-- wallet KEK and, for automatic recovery, the recovery share sealed under
-- the recovery KMS key. For password or cloud recovery it keeps only the
-- device's own encryption of the recovery share, which it cannot open.
-- Share indexes (Shamir x coordinates) are not secret.
CREATE TABLE embedded_wallets (
    id                     TEXT    PRIMARY KEY,
    app_id                 TEXT    NOT NULL,
    user_id                TEXT    NOT NULL REFERENCES users(id),
    address                TEXT    NOT NULL,  -- EIP-55, m/44'/60'/0'/0/0
    recovery_method        TEXT    NOT NULL CHECK (recovery_method IN ('automatic', 'password', 'cloud')),
    status                 TEXT    NOT NULL CHECK (status IN ('active', 'recovery_pending')),
    device_index           INTEGER NOT NULL,
    auth_index             INTEGER NOT NULL,
    recovery_index         INTEGER NOT NULL,
    sealed_auth_share      BLOB    NOT NULL,  -- purpose wallet, aad cachet/embedded/<id>/auth
    sealed_recovery_share  BLOB,              -- automatic: purpose recovery, aad cachet/embedded/<id>/recovery
    device_recovery_share  BLOB,              -- password, cloud: sealed by the device, opaque here
    recovery_kdf           TEXT,              -- password: the device's Argon2id parameters, JSON
    key_generation         INTEGER NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    version                INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX embedded_wallets_user ON embedded_wallets(user_id);

-- Releases of shares to devices, counted for the rate limits; the audit log
-- has the full record of each.
CREATE TABLE share_releases (
    app_id    TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    wallet_id TEXT    NOT NULL,
    kind      TEXT    NOT NULL,  -- recover, auth_share
    at        INTEGER NOT NULL
) STRICT;
CREATE INDEX share_releases_user ON share_releases(user_id, kind, at);
CREATE INDEX share_releases_wallet ON share_releases(wallet_id, kind, at);
