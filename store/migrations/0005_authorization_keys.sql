-- The appliance's own authorization keys (package authkeys). The key
-- material is derived from the root under the label "auth/<id>" and never
-- stored; a deleted key keeps its row for the audit and never signs again.
CREATE TABLE authorization_keys (
    id               TEXT    PRIMARY KEY,
    app_id           TEXT    NOT NULL,
    display_name     TEXT,
    public_key       TEXT    NOT NULL,   -- base64 DER SPKI
    allowed_uids     TEXT    NOT NULL,   -- JSON array
    allowed_gids     TEXT    NOT NULL,   -- JSON array
    allowed_requests TEXT    NOT NULL,   -- JSON array of "METHOD /path/*/pattern"
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER,
    deleted_at       INTEGER
) STRICT;
CREATE INDEX authorization_keys_app ON authorization_keys(app_id, created_at);
