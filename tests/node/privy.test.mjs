// Privy's own Node SDK (@privy-io/node, unchanged) against a Cachet daemon
// on its Unix socket, and ethers v6 as an independent verifier of every
// signature Cachet returns. cmd/cachet's TestPrivyNodeSDK starts the daemon
// and runs this file with:
//   CACHET_SOCKET, CACHET_BASE_URL, CACHET_APP_ID, CACHET_APP_SECRET
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { PrivyClient, APIError } from '@privy-io/node';
import { Agent, fetch as undiciFetch } from 'undici';
import {
  Transaction, verifyMessage, verifyTypedData, verifyAuthorization, recoverAddress, keccak256, sha256,
  toUtf8Bytes, getAddress, hexlify, randomBytes,
} from 'ethers';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestPrivyNodeSDK)`);
  return v;
};

// The SDK takes a fetch of our choosing; undici's Agent connects to the
// daemon's Unix socket. Nothing else about the SDK changes.
const dispatcher = new Agent({ connect: { socketPath: env('CACHET_SOCKET') } });
const privy = new PrivyClient({
  appId: env('CACHET_APP_ID'),
  appSecret: env('CACHET_APP_SECRET'),
  apiUrl: env('CACHET_BASE_URL'),
  fetch: (url, init) => undiciFetch(url, { ...init, dispatcher }),
  maxRetries: 0,
});

// An authorization key in the forms Privy's SDKs use: base64 PKCS#8
// private, base64 DER SPKI public.
function authKey() {
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

const [k1, k2, k3] = [authKey(), authKey(), authKey()];
const eip1559 = {
  type: 2, chain_id: 11155111, nonce: 7, to: '0x000000000000000000000000000000000000dEaD',
  value: '0x2386f26fc10000', gas_limit: 21000, max_fee_per_gas: '0x77359400', max_priority_fee_per_gas: '0x3b9aca00',
};

test('2-of-3 key quorum owns a wallet; two keys sign, one is refused; the old owner hands over', async () => {
  const quorum = await privy.keyQuorums().create({
    public_keys: [k1.pub, k2.pub, k3.pub], authorization_threshold: 2, display_name: 'treasury ops',
  });
  assert.equal(quorum.authorization_threshold, 2);
  assert.equal(quorum.authorization_keys.length, 3);

  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner_id: quorum.id, idempotency_key: randomUUID() });
  assert.equal(wallet.owner_id, quorum.id);
  assert.match(wallet.address, /^0x[0-9a-fA-F]{40}$/);
  const got = await privy.wallets().get(wallet.id);
  assert.equal(got.address, wallet.address);

  // Two of three keys: accepted, and ethers recovers the wallet's address.
  const signed = await privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: eip1559 },
    authorization_context: { authorization_private_keys: [k1.priv, k3.priv] },
  });
  assert.equal(signed.encoding, 'rlp');
  const tx = Transaction.from(signed.signed_transaction);
  assert.equal(tx.type, 2);
  assert.equal(tx.from, getAddress(wallet.address));
  assert.equal(tx.chainId, 11155111n);
  assert.equal(tx.nonce, 7);
  assert.equal(tx.to, getAddress(eip1559.to));
  assert.equal(tx.value, 10000000000000000n);

  // One key: refused, nothing signed.
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: eip1559 },
    authorization_context: { authorization_private_keys: [k2.priv] },
  }), 401);

  // The old owner's keys hand the wallet to a new single key.
  const next = authKey();
  const updated = await privy.wallets().update(wallet.id, {
    owner: { public_key: next.pub },
    authorization_context: { authorization_private_keys: [k1.priv, k2.priv] },
  });
  assert.notEqual(updated.owner_id, quorum.id);
  // The old quorum no longer controls it; the new key does.
  await refused(privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: eip1559 },
    authorization_context: { authorization_private_keys: [k1.priv, k2.priv] },
  }), 401);
  const again = await privy.wallets().ethereum().signTransaction(wallet.id, {
    params: { transaction: eip1559 },
    authorization_context: { authorization_private_keys: [next.priv] },
  });
  assert.equal(Transaction.from(again.signed_transaction).from, getAddress(wallet.address));
});

test('ethers recovers every kind of signature to the wallet address', async () => {
  const owner = authKey();
  const wallet = await privy.wallets().create({ chain_type: 'ethereum', owner: { public_key: owner.pub } });
  const addr = getAddress(wallet.address);
  const ctx = { authorization_context: { authorization_private_keys: [owner.priv] } };
  const eth = privy.wallets().ethereum();

  // Transactions of each type.
  const txs = {
    0: { type: 0, chain_id: 1, nonce: 0, to: '0x000000000000000000000000000000000000dEaD', value: 1, gas_limit: 21000, gas_price: '0x3b9aca00' },
    1: { type: 1, chain_id: 1, nonce: 1, to: '0x000000000000000000000000000000000000dEaD', value: '0x1', gas_limit: 30000, gas_price: '0x3b9aca00', data: '0x1234' },
    2: { ...eip1559, chain_id: 1 },
    4: {
      type: 4, chain_id: 1, nonce: 3, to: addr, value: 0, gas_limit: 100000,
      max_fee_per_gas: '0x77359400', max_priority_fee_per_gas: '0x3b9aca00',
      authorization_list: [],
    },
  };
  // A 7702 authorization signed by the wallet itself, then carried by a type-4 transaction.
  const authz = await eth.sign7702Authorization(wallet.id, {
    params: { contract: '0x1234567890123456789012345678901234567890', chain_id: 1, nonce: 4 }, ...ctx,
  });
  const a = authz.authorization;
  assert.equal(verifyAuthorization({ address: a.contract, chainId: BigInt(a.chain_id), nonce: BigInt(a.nonce) },
    { r: a.r, s: a.s, yParity: Number(a.y_parity) }), addr);
  txs[4].authorization_list = [a];
  for (const [type, t] of Object.entries(txs)) {
    const out = await eth.signTransaction(wallet.id, { params: { transaction: t }, ...ctx });
    const parsed = Transaction.from(out.signed_transaction);
    assert.equal(parsed.type, Number(type), `type ${type}`);
    assert.equal(parsed.from, addr, `type ${type} recovers to the wallet`);
    if (Number(type) === 4) {
      assert.equal(parsed.authorizationList.length, 1);
      assert.equal(parsed.authorizationList[0].address, getAddress(a.contract));
    }
  }

  // personal_sign, utf-8 and hex.
  const m1 = await eth.signMessage(wallet.id, { message: 'Cachet says hello', ...ctx });
  assert.equal(verifyMessage('Cachet says hello', m1.signature), addr);
  const m2 = await eth.signMessage(wallet.id, { message: '0xdeadbeef', ...ctx });
  assert.equal(verifyMessage(Uint8Array.from([0xde, 0xad, 0xbe, 0xef]), m2.signature), addr);

  // eth_signTypedData_v4 (the EIP-712 Mail example).
  const typed = {
    domain: { name: 'Ether Mail', version: '1', chainId: 1, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' },
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' }, { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' },
      ],
      Person: [{ name: 'name', type: 'string' }, { name: 'wallet', type: 'address' }],
      Mail: [{ name: 'from', type: 'Person' }, { name: 'to', type: 'Person' }, { name: 'contents', type: 'string' }],
    },
    primary_type: 'Mail',
    message: {
      from: { name: 'Cow', wallet: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' },
      to: { name: 'Bob', wallet: '0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB' },
      contents: 'Hello, Bob!',
    },
  };
  const td = await eth.signTypedData(wallet.id, { params: { typed_data: typed }, ...ctx });
  const { EIP712Domain, ...types } = typed.types;
  assert.equal(verifyTypedData(typed.domain, types, typed.message, td.signature), addr);

  // secp256k1_sign over a hash, and raw_sign over a hash and over bytes.
  const hash = keccak256(randomBytes(32));
  const s1 = await eth.signSecp256k1(wallet.id, { params: { hash }, ...ctx });
  assert.equal(recoverAddress(hash, s1.signature), addr);
  const r1 = await privy.wallets().rawSign(wallet.id, { params: { hash }, ...ctx });
  assert.equal(recoverAddress(hash, r1.signature), addr);
  const r2 = await privy.wallets().rawSign(wallet.id, {
    params: { bytes: 'raw bytes to sign', encoding: 'utf-8', hash_function: 'keccak256' }, ...ctx,
  });
  assert.equal(recoverAddress(keccak256(toUtf8Bytes('raw bytes to sign')), r2.signature), addr);
  const r3 = await privy.wallets().rawSign(wallet.id, {
    params: { bytes: hexlify(toUtf8Bytes('sha')).slice(2), encoding: 'hex', hash_function: 'sha256' }, ...ctx,
  });
  assert.equal(recoverAddress(sha256(toUtf8Bytes('sha')), r3.signature), addr);
});

test('lists wallets with cursor pagination and honours idempotency keys', async () => {
  const key = randomUUID();
  const w1 = await privy.wallets().create({ chain_type: 'ethereum', idempotency_key: key });
  const w2 = await privy.wallets().create({ chain_type: 'ethereum', idempotency_key: key });
  assert.equal(w2.id, w1.id, 'the same idempotency key returns the stored response');
  await refused(privy.wallets().create({ chain_type: 'ethereum', display_name: 'other', idempotency_key: key }), 400);
  const seen = new Set();
  for await (const w of privy.wallets().list({ limit: 2 })) seen.add(w.id);
  assert.ok(seen.has(w1.id));
  assert.ok(seen.size >= 3, `listed ${seen.size} wallets`);
});
