-- Lookups that scanned every wallet of an app, found by index instead:
-- the live wallet at an address (every import), and the wallets a key
-- quorum owns or signs for (every user-key authenticate, inside the
-- writer; every quorum delete). At a million wallets a scan inside the
-- single writer held every other commit for about a second.
CREATE INDEX wallets_address ON wallets(app_id, address) WHERE archived_at IS NULL;

-- wallet_quorums mirrors wallets.owner_id and the signer_id of each of
-- wallets.additional_signers, archived wallets included; custody keeps it
-- in step in the transaction that writes either column.
CREATE TABLE wallet_quorums (
    quorum_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    PRIMARY KEY (quorum_id, wallet_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX wallet_quorums_wallet ON wallet_quorums(wallet_id);

INSERT OR IGNORE INTO wallet_quorums(quorum_id, wallet_id)
    SELECT owner_id, id FROM wallets WHERE owner_id IS NOT NULL;
INSERT OR IGNORE INTO wallet_quorums(quorum_id, wallet_id)
    SELECT json_extract(j.value, '$.signer_id'), w.id FROM wallets w, json_each(w.additional_signers) j
    WHERE json_extract(j.value, '$.signer_id') IS NOT NULL;
