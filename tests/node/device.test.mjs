// An independent device client of embedded wallets, written from the
// README's "The device protocol, byte by byte" alone: no Cachet code, no
// Go. It uses node:crypto (P-256, HKDF, HMAC, ChaCha20-Poly1305, SHA-256),
// ethers (BIP-39, BIP-32, EIP-712), hash-wasm (Argon2id), @noble/ciphers
// (XChaCha20-Poly1305) and shamir-secret-sharing (Privy's port of Vault's
// Shamir). cmd/cachet's TestDeviceClientNode serves a dev appliance and runs
// this file with CACHET_SOCKET, CACHET_BASE_URL, CACHET_APP_ID,
// CACHET_APP_SECRET, CACHET_USER (a custom_user_id) and CACHET_JWT (its
// token from the dev identity provider).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Agent, fetch } from 'undici';
import { Mnemonic, HDNodeWallet, getAddress } from 'ethers';
import { argon2id } from 'hash-wasm';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { combine } from 'shamir-secret-sharing';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestDeviceClientNode)`);
  return v;
};
const appId = env('CACHET_APP_ID');
const jwt = env('CACHET_JWT');
const dispatcher = new Agent({ connect: { socketPath: env('CACHET_SOCKET') } });
const b64 = (u8) => Buffer.from(u8).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

// The relay: the app's server calls the socket with the app's credentials.
async function call(method, path, body) {
  const res = await fetch(env('CACHET_BASE_URL') + path, {
    method, dispatcher,
    headers: {
      authorization: 'Basic ' + Buffer.from(`${appId}:${env('CACHET_APP_SECRET')}`).toString('base64'),
      'privy-app-id': appId, 'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const out = await res.json();
  if (!res.ok) {
    const err = new Error(`${method} ${path}: ${res.status} ${out.code}: ${out.error}`);
    err.status = res.status; err.code = out.code;
    throw err;
  }
  return out;
}

// --- HPKE (RFC 9180), base mode: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256,
// ChaCha20-Poly1305, empty info and AAD, one message.
const i2osp = (n, len) => { const b = Buffer.alloc(len); b.writeUIntBE(n, 0, len); return b; };
const KEM_SUITE = Buffer.concat([Buffer.from('KEM'), i2osp(0x0010, 2)]);
const HPKE_SUITE = Buffer.concat([Buffer.from('HPKE'), i2osp(0x0010, 2), i2osp(0x0001, 2), i2osp(0x0003, 2)]);
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const extract = (salt, ikm) => hmac(salt.length ? salt : Buffer.alloc(32), ikm);
function expand(prk, info, len) {
  let t = Buffer.alloc(0), out = Buffer.alloc(0);
  for (let i = 1; out.length < len; i++) {
    t = hmac(prk, Buffer.concat([t, info, Buffer.from([i])]));
    out = Buffer.concat([out, t]);
  }
  return out.subarray(0, len);
}
const labeledExtract = (suite, salt, label, ikm) =>
  extract(salt, Buffer.concat([Buffer.from('HPKE-v1'), suite, Buffer.from(label), ikm]));
const labeledExpand = (suite, prk, label, info, len) =>
  expand(prk, Buffer.concat([i2osp(len, 2), Buffer.from('HPKE-v1'), suite, Buffer.from(label), info]), len);

function keySchedule(dh, enc, pkR) {
  const kemContext = Buffer.concat([enc, pkR]);
  const eaePrk = labeledExtract(KEM_SUITE, Buffer.alloc(0), 'eae_prk', dh);
  const shared = labeledExpand(KEM_SUITE, eaePrk, 'shared_secret', kemContext, 32);
  const none = Buffer.alloc(0);
  const ctx = Buffer.concat([Buffer.from([0]), labeledExtract(HPKE_SUITE, none, 'psk_id_hash', none),
    labeledExtract(HPKE_SUITE, none, 'info_hash', none)]);
  const secret = labeledExtract(HPKE_SUITE, shared, 'secret', none);
  return { key: labeledExpand(HPKE_SUITE, secret, 'key', ctx, 32), nonce: labeledExpand(HPKE_SUITE, secret, 'base_nonce', ctx, 12) };
}

// deviceKey is a fresh P-256 key; spki is device_public_key's value.
function deviceKey() {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  const pub = ecdh.getPublicKey();
  const jwk = { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') };
  const spki = crypto.createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
  return { ecdh, spki: spki.toString('base64') };
}

function openBox(ecdh, box) {
  assert.equal(box.encryption_type, 'HPKE');
  const enc = Buffer.from(box.encapsulated_key, 'base64');
  const ct = Buffer.from(box.ciphertext, 'base64');
  assert.equal(enc.length, 65, 'encapsulated_key is a 65-byte uncompressed point');
  const { key, nonce } = keySchedule(ecdh.computeSecret(enc), enc, ecdh.getPublicKey());
  const d = crypto.createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  d.setAuthTag(ct.subarray(ct.length - 16));
  return new Uint8Array(Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]));
}

function sealBox(pkR, plaintext) {
  const eph = crypto.createECDH('prime256v1');
  eph.generateKeys();
  const enc = eph.getPublicKey();
  const { key, nonce } = keySchedule(eph.computeSecret(pkR), enc, pkR);
  const c = crypto.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  const ct = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return { encryption_type: 'HPKE', encapsulated_key: enc.toString('base64'), ciphertext: ct.toString('base64') };
}

// --- Shares: GF(2^8) modulo x^8+x^4+x^3+x+1; a share is 16 values then x.
function gfMul(a, b) {
  let p = 0;
  for (let i = 0; i < 8; i++) {
    if (b & 1) p ^= a;
    const hi = a & 0x80;
    a = (a << 1) & 0xff;
    if (hi) a ^= 0x1b;
    b >>= 1;
  }
  return p;
}
const gfInv = (a) => { let r = 1; for (let i = 0; i < 254; i++) r = gfMul(r, a); return r; }; // a^254
function shareAt(s1, s2, x) {
  const x1 = s1[s1.length - 1], x2 = s2[s2.length - 1];
  const l1 = gfMul(x ^ x2, gfInv(x1 ^ x2)), l2 = gfMul(x ^ x1, gfInv(x2 ^ x1));
  const out = new Uint8Array(s1.length);
  for (let i = 0; i < s1.length - 1; i++) out[i] = gfMul(s1[i], l1) ^ gfMul(s2[i], l2);
  out[s1.length - 1] = x;
  return out;
}
function checkShare(share, index) {
  assert.equal(share.length, 17, 'a share is 17 bytes');
  assert.equal(share[16], index, 'a share ends with its index');
}

// --- The key: BIP-39 entropy, BIP-32 m/44'/60'/0'/0/0.
async function walletKey(a, b, w) {
  const entropy = await combine([a, b]);
  const key = HDNodeWallet.fromMnemonic(Mnemonic.fromEntropy(entropy), "m/44'/60'/0'/0/0");
  assert.equal(key.address, getAddress(w.address), 'the shares give the wallet address');
  return key;
}

// --- Sealed recovery share: 0x01 || nonce(24) || XChaCha20-Poly1305.
const aad = (walletId, method) => new TextEncoder().encode(`cachet/v1/embedded/${walletId}/recovery/${method}`);
async function passwordKey(password, kdf) {
  assert.equal(kdf.algorithm, 'argon2id');
  return argon2id({
    password: new TextEncoder().encode(password), salt: unb64(kdf.salt),
    iterations: kdf.time, memorySize: kdf.memory_kib, parallelism: kdf.threads, hashLength: 32, outputType: 'binary',
  });
}
const cloudKey = (secret) => new Uint8Array(crypto.hkdfSync('sha256', secret, Buffer.alloc(0), 'cachet/v1/embedded/cloud', 32));
function seal(share, key, walletId, method) {
  const nonce = crypto.randomBytes(24);
  const ct = xchacha20poly1305(key, nonce, aad(walletId, method)).encrypt(share);
  return new Uint8Array(Buffer.concat([Buffer.from([0x01]), nonce, ct]));
}
function unseal(sealed, key, walletId, method) {
  assert.equal(sealed[0], 0x01, 'version byte');
  return xchacha20poly1305(key, sealed.subarray(1, 25), aad(walletId, method)).decrypt(sealed.subarray(25));
}

// The user's secrets.
const password = 'correct horse battery staple ✓';
const cloudSecret = crypto.randomBytes(32);

async function payloadFor(method, rec, walletId) {
  if (method === 'automatic') return { method, recovery_share: b64(rec) };
  if (method === 'password') {
    const kdf = { algorithm: 'argon2id', salt: b64(crypto.randomBytes(16)), time: 3, memory_kib: 65536, threads: 4 };
    const sealed = seal(rec, await passwordKey(password, kdf), walletId, method);
    assert.equal(sealed.length, 58);
    return { method, encrypted_recovery_share: b64(sealed), recovery_kdf: kdf };
  }
  return { method, encrypted_recovery_share: b64(seal(rec, cloudKey(cloudSecret), walletId, method)) };
}

// setRecovery: challenge, payload sealed to the challenge key, EIP-712
// signature over wallet, challenge and SHA-256 of the ciphertext, PUT.
async function setRecovery(w, key, rec, method, { tamper = false } = {}) {
  const ch = await call('POST', `/v1/embedded_wallets/${w.id}/challenge`, { user_jwt: jwt });
  assert.match(ch.challenge, /^[0-9a-f]{32}$/);
  assert.equal(ch.encryption_type, 'HPKE');
  const payload = await payloadFor(method, rec, w.id);
  const box = sealBox(Buffer.from(ch.encryption_public_key, 'base64'), Buffer.from(JSON.stringify(payload)));
  const digest = crypto.createHash('sha256').update(Buffer.from(box.ciphertext, 'base64')).digest();
  if (tamper) digest[0] ^= 1;
  const signature = await key.signTypedData(
    { name: 'Cachet embedded wallet recovery', version: '1' },
    { RecoveryChange: [{ name: 'wallet', type: 'string' }, { name: 'challenge', type: 'string' }, { name: 'payloadSha256', type: 'bytes32' }] },
    { wallet: w.id, challenge: ch.challenge, payloadSha256: '0x' + digest.toString('hex') });
  return call('PUT', `/v1/embedded_wallets/${w.id}/recovery`, { user_jwt: jwt, challenge: ch.challenge, signature, payload: box });
}

// create provisions a wallet with method on a first device.
async function create(method) {
  const dk = deviceKey();
  const r = await call('POST', '/v1/embedded_wallets', { user_jwt: jwt, device_public_key: dk.spki, recovery: { method } });
  assert.equal(r.recovery_method, method);
  assert.equal(r.chain_type, 'ethereum');
  const ix = r.share_indexes;
  assert.equal(new Set([ix.device, ix.auth, ix.recovery]).size, 3);
  const device = openBox(dk.ecdh, r.device_share);
  checkShare(device, ix.device);
  if (method === 'automatic') {
    assert.equal(r.status, 'active');
    assert.equal(r.recovery_share, undefined);
    return { w: r, device };
  }
  assert.equal(r.status, 'recovery_pending');
  const rec = openBox(dk.ecdh, r.recovery_share);
  checkShare(rec, ix.recovery);
  const key = await walletKey(device, rec, r);
  const done = await setRecovery(r, key, rec, method);
  assert.equal(done.status, 'active');
  assert.equal(done.recovery_method, method);
  return { w: done, device };
}

// recover puts the wallet on a new device with the method's secret, and
// derives that device's share.
async function recover(w, { wrongPassword = false } = {}) {
  const dk = deviceKey();
  const r = await call('POST', `/v1/embedded_wallets/${w.id}/recover`, { user_jwt: jwt, device_public_key: dk.spki });
  assert.equal(r.id, w.id);
  const auth = openBox(dk.ecdh, r.auth_share);
  checkShare(auth, r.share_indexes.auth);
  let rec;
  if (r.recovery_method === 'automatic') {
    rec = openBox(dk.ecdh, r.recovery_share);
  } else {
    const sealed = openBox(dk.ecdh, r.encrypted_recovery_share);
    const key = r.recovery_method === 'password'
      ? await passwordKey(wrongPassword ? password + '!' : password, r.recovery_kdf)
      : cloudKey(cloudSecret);
    rec = unseal(sealed, key, w.id, r.recovery_method);
  }
  checkShare(rec, r.share_indexes.recovery);
  const key = await walletKey(auth, rec, r);
  const device = shareAt(auth, rec, r.share_indexes.device);
  return { key, auth, rec, device, w: r };
}

const methods = ['automatic', 'password', 'cloud'];
const next = { automatic: 'password', password: 'cloud', cloud: 'automatic' };

test('the user exists', async () => {
  const u = await call('POST', '/v1/users/custom_auth/id', { custom_user_id: env('CACHET_USER') });
  assert.match(u.id, /^did:privy:/);
});

for (const method of methods) {
  test(`${method}: provision, recover on a new device, change to ${next[method]}, recover again`, async () => {
    const { w, device } = await create(method);

    const r1 = await recover(w);
    assert.deepEqual(r1.device, device, 'the new device derives the same device share');
    if (method === 'password') {
      await assert.rejects(recover(w, { wrongPassword: true }), /invalid tag|tag/i, 'a wrong password does not open the share');
    }

    // The change, from the device share and a fetched auth share.
    const dk = deviceKey();
    const a = await call('POST', `/v1/embedded_wallets/${w.id}/auth_share`, { user_jwt: jwt, device_public_key: dk.spki });
    const auth = openBox(dk.ecdh, a.auth_share);
    const key = await walletKey(device, auth, w);
    const rec = shareAt(device, auth, w.share_indexes.recovery);
    assert.deepEqual(rec, r1.rec, 'the recovery share derived from device and auth shares');
    await assert.rejects(setRecovery(w, key, rec, next[method], { tamper: true }), (e) => e.status === 401,
      'a signature over another payload is refused');
    const changed = await setRecovery(w, key, rec, next[method]);
    assert.equal(changed.recovery_method, next[method]);
    assert.equal(changed.status, 'active');

    const r2 = await recover(changed);
    assert.equal(r2.w.recovery_method, next[method]);
    assert.deepEqual(r2.device, device);
    assert.equal(r2.key.address, r1.key.address);
  });
}
