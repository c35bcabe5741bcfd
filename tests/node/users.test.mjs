// Users, user keys from the app's own identity provider, export and import,
// with Privy's own Node SDK (@privy-io/node, unchanged) against two Cachet
// appliances on their Unix sockets; ethers v6 checks every key and
// signature independently. cmd/cachet's TestUsersNodeSDK starts both
// appliances, writes the identity provider's JWKS into appliance A's config
// and runs this file with:
//   CACHET_BASE_URL, CACHET_SOCKET, CACHET_APP_ID, CACHET_APP_SECRET (A),
//   CACHET_SOCKET_B, CACHET_APP_ID_B, CACHET_APP_SECRET_B (B),
//   CACHET_USER (the custom_user_id the JWTs name),
//   CACHET_JWT (valid), CACHET_JWT_EXPIRED, CACHET_JWT_OTHER_ISSUER,
//   CACHET_JWT_OTHER_AUDIENCE, CACHET_JWT_UNKNOWN_KEY
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { PrivyClient, APIError } from '@privy-io/node';
import { Agent, fetch as undiciFetch } from 'undici';
import { Transaction, Wallet as EthersWallet, HDNodeWallet, verifyMessage, getAddress } from 'ethers';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestUsersNodeSDK)`);
  return v;
};

function client(socket, appId, appSecret) {
  const dispatcher = new Agent({ connect: { socketPath: socket } });
  return new PrivyClient({
    appId, appSecret, apiUrl: env('CACHET_BASE_URL'),
    fetch: (url, init) => undiciFetch(url, { ...init, dispatcher }),
    maxRetries: 0,
  });
}
const privy = client(env('CACHET_SOCKET'), env('CACHET_APP_ID'), env('CACHET_APP_SECRET'));
const privyB = client(env('CACHET_SOCKET_B'), env('CACHET_APP_ID_B'), env('CACHET_APP_SECRET_B'));
const jwt = env('CACHET_JWT');

function authKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    priv: privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'),
    pub: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
  };
}

async function refused(promise, status, pattern) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof APIError, `expected an APIError, got ${err}`);
    assert.equal(err.status, status, `status ${err.status}: ${JSON.stringify(err.error)}`);
    if (pattern) assert.match(JSON.stringify(err.error), pattern);
    return true;
  });
}

let nonce = 0;
const tx = () => ({
  type: 2, chain_id: 11155111, nonce: nonce++, to: '0x000000000000000000000000000000000000dEaD',
  value: '0x1', gas_limit: 21000, max_fee_per_gas: '0x77359400', max_priority_fee_per_gas: '0x3b9aca00',
});

async function signs(p, wallet, authorization_context) {
  const out = await p.wallets().ethereum().signTransaction(wallet.id, { params: { transaction: tx() }, authorization_context });
  assert.equal(Transaction.from(out.signed_transaction).from, getAddress(wallet.address));
}

// The user, created once by the app with its identity provider's user id.
const user = await privy.users().create({ linked_accounts: [{ type: 'custom_auth', custom_user_id: env('CACHET_USER') }] });

test('users: created with a custom_auth account, found by id and by custom id', async () => {
  assert.match(user.id, /^did:privy:/);
  assert.equal(user.linked_accounts[0].type, 'custom_auth');
  assert.equal(user.linked_accounts[0].custom_user_id, env('CACHET_USER'));
  assert.equal((await privy.users()._get(user.id)).id, user.id);
  assert.equal((await privy.users().getByCustomAuthID({ custom_user_id: env('CACHET_USER') })).id, user.id);
  await refused(privy.users().create({ linked_accounts: [{ type: 'custom_auth', custom_user_id: env('CACHET_USER') }] }), 409);
  await refused(privy.users().create({ linked_accounts: [{ type: 'email', address: 'a@example.com' }] }), 400, /custom_auth/);
  await refused(privy.users().getByCustomAuthID({ custom_user_id: 'nobody' }), 404);
});

test('a wallet owned by a user: the user_jwts context gets a user key and signs', async () => {
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner: { user_id: user.id } });
  await signs(privy, wallet, { user_jwts: [jwt] });
  const m = await privy.wallets().ethereum().signMessage(wallet.id, { message: 'from my own IdP', authorization_context: { user_jwts: [jwt] } });
  assert.equal(verifyMessage('from my own IdP', m.signature), getAddress(wallet.address));
  // Without the user's approval: refused.
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, { params: { transaction: tx() } }), 401);
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: tx() }, authorization_context: { authorization_private_keys: [authKey().priv] },
  }), 401);
});

test('JWTs the identity provider settings refuse get no user key, and say which check failed', async () => {
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner: { user_id: user.id } });
  for (const [name, check] of [
    ['CACHET_JWT_EXPIRED', /\(expiry\)/],
    ['CACHET_JWT_OTHER_ISSUER', /\(issuer\)/],
    ['CACHET_JWT_OTHER_AUDIENCE', /\(audience\)/],
    ['CACHET_JWT_UNKNOWN_KEY', /\(signature\)/],
  ]) {
    const bad = env(name);
    await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
      params: { transaction: tx() }, authorization_context: { user_jwts: [bad] },
    }), 401, check);
  }
});

test('1-of-2 (user, server): the server alone updates policy and signers while the user is offline', async () => {
  const server = authKey();
  const owner = await privy.keyQuorums().create({ public_keys: [server.pub], user_ids: [user.id], authorization_threshold: 1 });
  assert.deepEqual(owner.user_ids, [user.id]);
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  const policy = await privy.policies().create({
    version: '1.0', name: 'messages only', chain_type: 'ethereum',
    rules: [{ name: 'sign messages', method: 'personal_sign', action: 'ALLOW', conditions: [] }],
  });
  const bot = await privy.keyQuorums().create({ public_keys: [authKey().pub], authorization_threshold: 1 });
  const updated = await privy.wallets().update(wallet.id, {
    policy_ids: [policy.id], additional_signers: [{ signer_id: bot.id }],
    authorization_context: { authorization_private_keys: [server.priv] },
  });
  assert.deepEqual(updated.policy_ids, [policy.id]);
  assert.equal(updated.additional_signers[0].signer_id, bot.id);
  // The user alone is also enough, for what the policy allows.
  const m = await privy.wallets().ethereum().signMessage(wallet.id, { message: 'user alone', authorization_context: { user_jwts: [jwt] } });
  assert.equal(verifyMessage('user alone', m.signature), getAddress(wallet.address));
});

test('2-of-2 (user, server): either alone is refused, both together accepted', async () => {
  const server = authKey();
  const owner = await privy.keyQuorums().create({ public_keys: [server.pub], user_ids: [user.id], authorization_threshold: 2 });
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: tx() }, authorization_context: { user_jwts: [jwt] },
  }), 401);
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: tx() }, authorization_context: { authorization_private_keys: [server.priv] },
  }), 401);
  await signs(privy, wallet, { user_jwts: [jwt], authorization_private_keys: [server.priv] });
});

test('server-side export through a 1-of-2 quorum, decrypted by the SDK; import into another appliance', async () => {
  const server = authKey();
  const owner = await privy.keyQuorums().create({ public_keys: [server.pub], user_ids: [user.id], authorization_threshold: 1 });
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  const ctx = { authorization_context: { authorization_private_keys: [server.priv] } };

  const { private_key } = await privy.wallets().exportPrivateKey(wallet.id, ctx);
  assert.equal(new EthersWallet(private_key).address, getAddress(wallet.address));
  const { seed_phrase } = await privy.wallets().exportSeedPhrase(wallet.id, ctx);
  assert.equal(HDNodeWallet.fromPhrase(seed_phrase).address, getAddress(wallet.address));
  assert.ok((await privy.wallets().get(wallet.id)).exported_at, 'exported_at is set');
  // The user, through a user key, may export too; a stranger may not.
  const byUser = await privy.wallets().exportPrivateKey(wallet.id, { authorization_context: { user_jwts: [jwt] } });
  assert.equal(byUser.private_key, private_key);
  await refused(privy.wallets().exportPrivateKey(wallet.id, { authorization_context: { authorization_private_keys: [authKey().priv] } }), 401);

  // Appliance B imports the private key; it signs for the same address.
  const ownerB = authKey();
  const imported = await privyB.wallets().import({
    wallet: { address: wallet.address, chain_type: 'ethereum', entropy_type: 'private-key', private_key },
    owner: { public_key: ownerB.pub },
  });
  assert.equal(getAddress(imported.address), getAddress(wallet.address));
  assert.ok(imported.imported_at, 'imported_at is set');
  const sig = await privyB.wallets().ethereum().signMessage(imported.id, {
    message: 'same key, other appliance', authorization_context: { authorization_private_keys: [ownerB.priv] },
  });
  assert.equal(verifyMessage('same key, other appliance', sig.signature), getAddress(wallet.address));
  await signs(privyB, imported, { authorization_private_keys: [ownerB.priv] });

  // A seed phrase imports as an HD wallet (index 0).
  const other = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  const phrase = (await privy.wallets().exportSeedPhrase(other.id, ctx)).seed_phrase;
  const hd = await privyB.wallets().import({
    wallet: { address: other.address, chain_type: 'ethereum', entropy_type: 'hd', index: 0, private_key: phrase },
    owner: { public_key: ownerB.pub },
  });
  await signs(privyB, hd, { authorization_private_keys: [ownerB.priv] });

  // The same address twice: refused while the first import lives.
  await refused(privyB.wallets().import({
    wallet: { address: wallet.address, chain_type: 'ethereum', entropy_type: 'private-key', private_key },
    owner: { public_key: ownerB.pub },
  }), 409);
  // A key that is not the named address's: refused, nothing stored.
  const [named, stranger] = [EthersWallet.createRandom(), EthersWallet.createRandom()];
  await refused(privyB.wallets().import({
    wallet: { address: named.address, chain_type: 'ethereum', entropy_type: 'private-key', private_key: stranger.privateKey },
    owner: { public_key: ownerB.pub },
  }), 400, /another address/);
  const listed = [];
  for await (const w of privyB.wallets().list()) listed.push(getAddress(w.address));
  assert.ok(!listed.includes(named.address) && !listed.includes(stranger.address), 'a refused import stored nothing');
});
