// Package wallet owns Ethereum key derivation and signing for Cachet: it turns
// wallet entropy into a secp256k1 key (BIP-39, BIP-32, BIP-44 path
// m/44'/60'/0'/0/0), parses and validates the bodies of Privy's
// POST /v1/wallets/{id}/rpc and POST /v1/wallets/{id}/raw_sign into typed
// requests, signs them, and builds the {"method", "data"} response objects that
// Privy's SDKs expect. It also holds a small JSON-RPC client that fills the
// fields of an eth_sendTransaction that the caller left out and broadcasts the
// signed transaction.
//
// # What this package does not do
//
// It stores nothing and logs nothing. It never sees a sealed blob: the caller
// unseals the private key (or the entropy), passes the bytes in, and zeroes
// them afterwards. Functions here zero the intermediate secrets they create
// (BIP-39 seed, BIP-32 extended keys, the ecdsa.PrivateKey scalar words); see
// DeriveKeyAt for the copies that the libraries keep and that cannot be zeroed.
// It does not decide whether a request may be signed: the policy engine reads
// the parsed Request (transaction, typed data, message, hash, authorization)
// before Sign is called, and the HTTP edge maps errors to Privy's
// {"error", "code"} once.
//
// # Errors
//
// Every problem with the client's input is an *InputError naming the JSON
// path of the field (for example "params.transaction.nonce"); the edge answers
// those with HTTP 400 "invalid_data". Reasons never repeat the offending value,
// so large or hostile inputs are not echoed. Errors from the Ethereum node are
// *RPCError (the node's own message, which is public chain data) or *NodeError
// (transport). ErrChainMismatch means the configured node serves another chain.
//
// # Specifications
//
// BIP-39 (English word list, empty passphrase), BIP-32, BIP-44 (coin type 60),
// EIP-155 (replay protection for type 0), EIP-2718 typed transactions,
// EIP-2930 (type 1), EIP-1559 (type 2), EIP-7702 (type 4 and authorizations),
// EIP-191 (personal_sign), EIP-712 (eth_signTypedData_v4), EIP-55 (address
// checksums), and Privy's wallet RPC shapes as summarised in
// shared/reference/privy-wallet-api.md section 4.
package wallet
