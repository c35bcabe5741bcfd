-- Lookups that scanned every wallet of an app, found by index instead:
-- the live wallet at an address (every import), the wallets a key quorum
-- owns or signs for (every user-key authenticate and quorum delete), and
-- the wallets that use a policy (every policy delete), the last three
-- inside the single writer. At a million wallets such a scan held every
-- other commit for seconds.
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

-- wallet_policies mirrors wallets.policy_ids and the override_policy_ids of
-- each additional signer, kept in step the same way.
CREATE TABLE wallet_policies (
    policy_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    PRIMARY KEY (policy_id, wallet_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX wallet_policies_wallet ON wallet_policies(wallet_id);

INSERT OR IGNORE INTO wallet_policies(policy_id, wallet_id)
    SELECT p.value, w.id FROM wallets w, json_each(w.policy_ids) p;
INSERT OR IGNORE INTO wallet_policies(policy_id, wallet_id)
    SELECT o.value, w.id FROM wallets w, json_each(w.additional_signers) s, json_each(s.value, '$.override_policy_ids') o;
