-- Every change of a wallet or key quorum bumps its version, so a signing
-- request authorized against one version can see, when it commits, that the
-- owner, signers, policies or quorum members changed meanwhile.
ALTER TABLE wallets ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE key_quorums ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
