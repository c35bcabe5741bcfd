-- Aggregation limits in O(log n) per request, independent of how many
-- contributions a window holds: each contribution carries the running total
-- of its (aggregation, wallet, group) up to and including itself, so a
-- window's sum is the difference of two running totals found by index.
-- Contributions recorded before this migration stay in
-- aggregation_events_legacy and are summed as before until the purge has
-- removed them (after the longest window, 72 h).
ALTER TABLE aggregation_events RENAME TO aggregation_events_legacy;
CREATE TABLE aggregation_events (
    aggregation_id TEXT    NOT NULL REFERENCES aggregations(id),
    wallet_id      TEXT    NOT NULL,
    group_key      TEXT    NOT NULL,
    amount         TEXT    NOT NULL,  -- decimal, exact (uint256)
    running        TEXT    NOT NULL,  -- decimal: sum of amount over this key's rows up to this one
    at             INTEGER NOT NULL   -- Unix ms, never decreasing within a key
) STRICT;
CREATE INDEX aggregation_events_running ON aggregation_events(aggregation_id, wallet_id, group_key, at);
