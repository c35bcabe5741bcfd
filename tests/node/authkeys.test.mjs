// An authorization key held by the appliance, used from Privy's own Node SDK
// through its external-signer hook (sign_fns): the SDK hands each sign_fn the
// canonical payload it would sign; the function forwards that request to
// Cachet's /v1/authorization_keys/{id}/sign, which rebuilds the same payload,
// signs it in the HSM and returns the signature. The key never leaves the
// hardware. Run by cmd/cachet's TestAuthorizationKeysNodeSDK with:
//   CACHET_SOCKET, CACHET_BASE_URL, CACHET_APP_ID, CACHET_APP_SECRET,
//   CACHET_AUTH_KEY_ID, CACHET_AUTH_KEY_PUBLIC
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { PrivyClient, APIError } from '@privy-io/node';
import { Agent, fetch as undiciFetch } from 'undici';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestAuthorizationKeysNodeSDK)`);
  return v;
};
const base = env('CACHET_BASE_URL');
const appId = env('CACHET_APP_ID');
const appSecret = env('CACHET_APP_SECRET');
const keyId = env('CACHET_AUTH_KEY_ID');
const serverPublicKey = env('CACHET_AUTH_KEY_PUBLIC');
const dispatcher = new Agent({ connect: { socketPath: env('CACHET_SOCKET') } });
const fetch = (url, init) => undiciFetch(url, { ...init, dispatcher });
const privy = new PrivyClient({ appId, appSecret, apiUrl: base, fetch, maxRetries: 0 });

// The README's example: a sign_fn backed by the appliance-held key.
const cachetSign = async (payload) => {
  const { method, url, body, headers } = JSON.parse(new TextDecoder().decode(payload));
  const res = await fetch(`${base}/v1/authorization_keys/${keyId}/sign`, {
    method: 'POST',
    headers: {
      authorization: 'Basic ' + Buffer.from(`${appId}:${appSecret}`).toString('base64'),
      'privy-app-id': appId,
      'content-type': 'application/json',
    },
    body: JSON.stringify({ method, url, body, headers }),
  });
  const out = await res.json();
  if (!res.ok) throw new Error(`cachet sign: ${res.status} ${out.code}: ${out.error}`);
  return out.signature;
};

function userKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    priv: privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'),
    pub: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
  };
}

async function refused(promise, status) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof APIError, `expected an APIError, got ${err}`);
    assert.equal(err.status, status, `status ${err.status}: ${JSON.stringify(err.error)}`);
    return true;
  });
}

async function fixtures() {
  const policy = await privy.policies().create({
    version: '1.0', name: 'messages only', chain_type: 'ethereum',
    rules: [{ name: 'sign messages', method: 'personal_sign', action: 'ALLOW', conditions: [] }],
  });
  const bot = await privy.keyQuorums().create({ public_keys: [userKey().pub], authorization_threshold: 1, display_name: 'bot' });
  return { policy, bot };
}

test('1-of-2 quorum: the server key alone updates policy and signers while the user is away', async () => {
  const user = userKey();
  const owner = await privy.keyQuorums().create({
    public_keys: [user.pub, serverPublicKey], authorization_threshold: 1, display_name: 'user or server',
  });
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  const { policy, bot } = await fixtures();
  const updated = await privy.wallets().update(wallet.id, {
    policy_ids: [policy.id],
    additional_signers: [{ signer_id: bot.id }],
    authorization_context: { sign_fns: [cachetSign] },
  });
  assert.deepEqual(updated.policy_ids, [policy.id]);
  assert.equal(updated.additional_signers[0].signer_id, bot.id);
  // The server key also signs RPC for the owner quorum.
  const sig = await privy.wallets().ethereum().signMessage(wallet.id, {
    message: 'rebalance', authorization_context: { sign_fns: [cachetSign] },
  });
  assert.match(sig.signature, /^0x[0-9a-f]{130}$/);
});

test('2-of-2 quorum: the server key alone is refused, with the user it is accepted', async () => {
  const user = userKey();
  const owner = await privy.keyQuorums().create({
    public_keys: [user.pub, serverPublicKey], authorization_threshold: 2, display_name: 'user and server',
  });
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: owner.id });
  const { policy, bot } = await fixtures();
  await refused(privy.wallets().update(wallet.id, {
    policy_ids: [policy.id], authorization_context: { sign_fns: [cachetSign] },
  }), 401);
  await refused(privy.wallets().update(wallet.id, {
    policy_ids: [policy.id], authorization_context: { authorization_private_keys: [user.priv] },
  }), 401);
  const updated = await privy.wallets().update(wallet.id, {
    policy_ids: [policy.id], additional_signers: [{ signer_id: bot.id }],
    authorization_context: { authorization_private_keys: [user.priv], sign_fns: [cachetSign] },
  });
  assert.deepEqual(updated.policy_ids, [policy.id]);
});
