-- Policies (package custody stores them, package policy defines and
-- evaluates them). Rules are kept as the policy's JSON array, each rule with
-- its id; version is bumped by every change.
CREATE TABLE policies (
    id          TEXT    PRIMARY KEY,
    app_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    chain_type  TEXT    NOT NULL,
    owner_id    TEXT    REFERENCES key_quorums(id),
    rules       TEXT    NOT NULL,
    version     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;
CREATE INDEX policies_app ON policies(app_id, created_at);

-- Condition sets: named lists of values for in_condition_set. norm is the
-- value lower-cased, for case-insensitive address membership.
CREATE TABLE condition_sets (
    id          TEXT    PRIMARY KEY,
    app_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    owner_id    TEXT    REFERENCES key_quorums(id),
    version     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;
CREATE TABLE condition_set_items (
    id          TEXT    PRIMARY KEY,
    set_id      TEXT    NOT NULL REFERENCES condition_sets(id),
    value       TEXT    NOT NULL,
    norm        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX condition_set_items_value ON condition_set_items(set_id, value);
CREATE INDEX condition_set_items_norm ON condition_set_items(set_id, norm);

-- Aggregations (stateful limits) and what has counted toward them. amount is
-- a decimal uint256; at is Unix ms. The writer serializes every transaction
-- that reads a sum and adds to it, so limits are exact.
CREATE TABLE aggregations (
    id          TEXT    PRIMARY KEY,
    app_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    definition  TEXT    NOT NULL,
    owner_id    TEXT    REFERENCES key_quorums(id),
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;
CREATE TABLE aggregation_events (
    aggregation_id TEXT    NOT NULL REFERENCES aggregations(id),
    wallet_id      TEXT    NOT NULL,
    group_key      TEXT    NOT NULL,
    amount         TEXT    NOT NULL,
    at             INTEGER NOT NULL
) STRICT;
CREATE INDEX aggregation_events_window ON aggregation_events(aggregation_id, wallet_id, group_key, at);
