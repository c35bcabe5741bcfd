// What the approvers sign is exactly what Cachet executes. Each request here
// is signed with Privy's own payload builder (formatRequestForAuthorization
// Signature + generateAuthorizationSignature from @privy-io/node, unchanged)
// over the exact bytes sent, as a relaying app server or a co-signer would.
// A body whose members differ from the schema's only by case or Unicode
// case folding (METHOD, PARAMS, paramſ with U+017F, recipient_public_Key
// with U+212A) means something else to a JavaScript reader than it would to
// Go's encoding/json: Cachet refuses it. For the bodies it accepts, ethers
// checks that what was executed is what was signed. cmd/cachet's
// TestRequestIntegrityNode starts the daemon and runs this file with:
//   CACHET_SOCKET, CACHET_BASE_URL, CACHET_APP_ID, CACHET_APP_SECRET
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import {
  PrivyClient, formatRequestForAuthorizationSignature, generateAuthorizationSignature,
} from '@privy-io/node';
import { Agent, fetch as undiciFetch } from 'undici';
import { Transaction, verifyMessage, getAddress } from 'ethers';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestRequestIntegrityNode)`);
  return v;
};
const base = env('CACHET_BASE_URL');
const appId = env('CACHET_APP_ID');
const dispatcher = new Agent({ connect: { socketPath: env('CACHET_SOCKET') } });
const privy = new PrivyClient({
  appId, appSecret: env('CACHET_APP_SECRET'), apiUrl: base,
  fetch: (url, init) => undiciFetch(url, { ...init, dispatcher }), maxRetries: 0,
});
const basic = 'Basic ' + Buffer.from(`${appId}:${env('CACHET_APP_SECRET')}`).toString('base64');

function authKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    priv: privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'),
    pub: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
  };
}

// send signs body (a JavaScript object: its members are exactly what every
// RFC 8785 reader sees) with Privy's payload builder and sends the same
// object's JSON.
async function send(method, path, body, keys) {
  const headers = { 'privy-app-id': appId, 'privy-request-expiry': String(Date.now() + 5 * 60 * 1000) };
  const payload = formatRequestForAuthorizationSignature({ version: 1, method, url: base + path, body, headers });
  const sigs = keys.map((k) => generateAuthorizationSignature({ authorizationPrivateKey: k.priv, input: payload }));
  const res = await undiciFetch(base + path, {
    method, dispatcher, body: JSON.stringify(body),
    headers: { ...headers, authorization: basic, 'content-type': 'application/json', 'privy-authorization-signature': sigs.join(',') },
  });
  return { status: res.status, json: await res.json() };
}

async function refusedNaming(method, path, body, keys, name) {
  const { status, json } = await send(method, path, body, keys);
  assert.equal(status, 400, `${JSON.stringify(json)}`);
  assert.equal(json.code, 'invalid_data');
  assert.ok(json.error.includes(name), `the error ${JSON.stringify(json.error)} does not name ${name}`);
}

const owner = authKey();
const tx = {
  type: 2, chain_id: 1, nonce: 3, to: '0x000000000000000000000000000000000000dEaD', value: '0xde0b6b3a7640000',
  gas_limit: 21000, max_fee_per_gas: '0x77359400', max_priority_fee_per_gas: '0x3b9aca00',
};
const login = { method: 'personal_sign', params: { message: 'Sign in to example.com', encoding: 'utf-8' } };

test('a login message approved is never a 1 ETH transaction executed', async () => {
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner: { public_key: owner.pub } });
  const rpc = `/v1/wallets/${wallet.id}/rpc`;
  // The approver's reader (RFC 8785, JavaScript) sees personal_sign; Go's
  // encoding/json would have taken the upper-case members last.
  await refusedNaming('POST', rpc, { ...login, METHOD: 'eth_signTransaction', PARAMS: { transaction: tx } }, [owner], 'METHOD');
  await refusedNaming('POST', rpc, { method: 'eth_signTransaction', paramſ: { transaction: tx }, params: { transaction: { ...tx, value: '0x1' } } }, [owner], 'paramſ');
  await refusedNaming('POST', rpc, { method: 'eth_signTransaction', params: { transaction: { ...tx, To: '0x000000000000000000000000000000000000bEEF' } } }, [owner], 'To');

  // What is accepted is executed as signed: the message signed is the one
  // approved, and the transaction signed has the approved fields.
  const msg = await send('POST', rpc, login, [owner]);
  assert.equal(msg.status, 200, JSON.stringify(msg.json));
  assert.equal(verifyMessage(login.params.message, msg.json.data.signature), getAddress(wallet.address));
  const signed = await send('POST', rpc, { method: 'eth_signTransaction', params: { transaction: tx } }, [owner]);
  assert.equal(signed.status, 200, JSON.stringify(signed.json));
  const parsed = Transaction.from(signed.json.data.signed_transaction);
  assert.equal(parsed.from, getAddress(wallet.address));
  assert.equal(parsed.to, getAddress(tx.to));
  assert.equal(parsed.value, BigInt(tx.value));
  assert.equal(parsed.nonce, tx.nonce);
  assert.equal(parsed.chainId, BigInt(tx.chain_id));
  assert.equal(parsed.gasLimit, BigInt(tx.gas_limit));
  assert.equal(parsed.maxFeePerGas, BigInt(tx.max_fee_per_gas));
});

test('a key quorum update approved is the update applied', async () => {
  const [k1, k2, k3, attacker] = [authKey(), authKey(), authKey(), authKey()];
  const quorum = await privy.keyQuorums().create({ public_keys: [k1.pub, k2.pub, k3.pub], authorization_threshold: 2 });
  const path = `/v1/key_quorums/${quorum.id}`;
  // The approvers read "add nobody, keep 2-of-3"; Go would have read the
  // attacker's 1-of-1.
  await refusedNaming('PATCH', path, {
    public_keys: [k1.pub, k2.pub, k3.pub], authorization_threshold: 2,
    PUBLIC_KEYS: [attacker.pub], AUTHORIZATION_THRESHOLD: 1,
  }, [k1, k2], 'PUBLIC_KEYS');
  await refusedNaming('PATCH', path, { public_Keys: [attacker.pub], authorization_threshold: 1 }, [k1, k2], 'public_Keys');
  const after = await privy.keyQuorums().get(quorum.id);
  assert.equal(after.authorization_threshold, 2);
  assert.deepEqual(after.authorization_keys.map((k) => k.public_key).sort(), [k1.pub, k2.pub, k3.pub].sort());
  // The honest update is applied as approved.
  const ok = await send('PATCH', path, { public_keys: [k1.pub, k2.pub], authorization_threshold: 2 }, [k1, k2]);
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  assert.deepEqual(ok.json.authorization_keys.map((k) => k.public_key).sort(), [k1.pub, k2.pub].sort());
});

test('an export approved for one recipient goes to no other', async () => {
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner: { public_key: owner.pub } });
  const recipient = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
  const thief = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
  await refusedNaming('POST', `/v1/wallets/${wallet.id}/export`, {
    encryption_type: 'HPKE', recipient_public_key: recipient, 'recipient_public_Key': thief,
  }, [owner], 'recipient_public_Key');
});
