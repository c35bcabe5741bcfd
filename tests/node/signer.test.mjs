// Ethereum libraries, unchanged, using a Cachet wallet through a [[signer]]
// JSON-RPC endpoint as an unlocked account: ethers v6 (IpcSocketProvider +
// JsonRpcSigner) and viem (a JSON-RPC account over an EIP-1193 transport on
// the same socket) each sign a transaction, a message and typed data, and
// every signature is verified independently (by the other library and by
// ethers' or viem's recovery). cmd/cachet's TestSignerNodeLibraries starts
// the daemon and runs this file with:
//   CACHET_SIGNER_SOCKET, CACHET_SIGNER_ADDRESS, CACHET_SIGNER_CHAIN
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  IpcSocketProvider, JsonRpcSigner, Network, Transaction, verifyMessage, verifyTypedData, getAddress, parseEther,
} from 'ethers';
import {
  createWalletClient, custom, defineChain, recoverTransactionAddress, verifyMessage as viemVerifyMessage,
  verifyTypedData as viemVerifyTypedData, parseTransaction,
} from 'viem';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through TestSignerNodeLibraries)`);
  return v;
};
const socket = env('CACHET_SIGNER_SOCKET');
const address = getAddress(env('CACHET_SIGNER_ADDRESS'));
const chainId = Number(env('CACHET_SIGNER_CHAIN'));
const to = '0x000000000000000000000000000000000000dEaD';

const domain = { name: 'Ether Mail', version: '1', chainId, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' };
const types = {
  Person: [{ name: 'name', type: 'string' }, { name: 'wallet', type: 'address' }],
  Mail: [{ name: 'from', type: 'Person' }, { name: 'to', type: 'Person' }, { name: 'contents', type: 'string' }, { name: 'amount', type: 'uint256' }],
};
const mail = {
  from: { name: 'Cow', wallet: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' },
  to: { name: 'Bob', wallet: '0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB' },
  contents: 'Hello, Bob!',
  amount: 123456789012345678901234567890n,
};

// ethers v6 over geth's IPC.
const provider = new IpcSocketProvider(socket, Network.from(chainId), { staticNetwork: Network.from(chainId) });
after(() => provider.destroy());

test('ethers: eth_accounts lists the wallet; JsonRpcSigner signs a transaction', async () => {
  const accounts = await provider.listAccounts();
  assert.ok(accounts.some((s) => s.address === address), `eth_accounts: ${accounts.map((s) => s.address)}`);
  const signer = new JsonRpcSigner(provider, address);
  const raw = await signer.signTransaction({
    type: 2, chainId, nonce: 3, to, value: parseEther('0.001'), gasLimit: 21000n,
    maxFeePerGas: 2_000_000_000n, maxPriorityFeePerGas: 1_000_000_000n,
  });
  const tx = Transaction.from(raw);
  assert.equal(tx.from, address);
  assert.equal(tx.to, getAddress(to));
  assert.equal(tx.nonce, 3);
  assert.equal(tx.value, parseEther('0.001'));
  assert.equal(tx.chainId, BigInt(chainId));
  assert.equal(getAddress(await recoverTransactionAddress({ serializedTransaction: raw })), address);
});

test('ethers: JsonRpcSigner signs a message (personal_sign)', async () => {
  const signer = new JsonRpcSigner(provider, address);
  const sig = await signer.signMessage('gm from ethers');
  assert.equal(verifyMessage('gm from ethers', sig), address);
  assert.ok(await viemVerifyMessage({ address, message: 'gm from ethers', signature: sig }));
});

test('ethers: JsonRpcSigner signs typed data (eth_signTypedData_v4)', async () => {
  const signer = new JsonRpcSigner(provider, address);
  const sig = await signer.signTypedData(domain, types, mail);
  assert.equal(verifyTypedData(domain, types, mail, sig), address);
  assert.ok(await viemVerifyTypedData({ address, domain, types, primaryType: 'Mail', message: mail, signature: sig }));
});

// viem: a JSON-RPC account; the transport is EIP-1193 over the same Unix
// socket (viem ships no IPC transport), newline-delimited.
function ipcRequest(path) {
  let id = 0;
  return async ({ method, params }) => new Promise((resolve, reject) => {
    const c = net.createConnection(path);
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i < 0) return;
      c.end();
      const msg = JSON.parse(buf.slice(0, i));
      if (msg.error) {
        const e = new Error(msg.error.message);
        e.code = msg.error.code;
        reject(e);
      } else resolve(msg.result);
    });
    c.on('error', reject);
    c.write(JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }) + '\n');
  });
}

const chain = defineChain({
  id: chainId, name: 'cachet-test', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: ['http://127.0.0.1:1'] } },
});
const client = createWalletClient({ account: address, chain, transport: custom({ request: ipcRequest(socket) }) });

test('viem: a JSON-RPC account signs a transaction (eth_signTransaction)', async () => {
  const [listed] = await client.getAddresses();
  assert.equal(getAddress(listed), address);
  const raw = await client.signTransaction({
    to, value: 1000n, nonce: 5, gas: 21000n, maxFeePerGas: 3_000_000_000n, maxPriorityFeePerGas: 1_000_000_000n,
  });
  const parsed = parseTransaction(raw);
  assert.equal(parsed.nonce, 5);
  assert.equal(parsed.value, 1000n);
  assert.equal(parsed.chainId, chainId);
  assert.equal(getAddress(await recoverTransactionAddress({ serializedTransaction: raw })), address);
  assert.equal(Transaction.from(raw).from, address);
});

test('viem: a JSON-RPC account signs a message (personal_sign)', async () => {
  const sig = await client.signMessage({ message: 'gm from viem' });
  assert.equal(verifyMessage('gm from viem', sig), address);
  assert.ok(await viemVerifyMessage({ address, message: 'gm from viem', signature: sig }));
});

test('viem: a JSON-RPC account signs typed data (eth_signTypedData_v4)', async () => {
  const sig = await client.signTypedData({ domain, types, primaryType: 'Mail', message: mail });
  assert.equal(verifyTypedData(domain, types, mail, sig), address);
  assert.ok(await viemVerifyTypedData({ address, domain, types, primaryType: 'Mail', message: mail, signature: sig }));
});
