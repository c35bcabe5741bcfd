package wallet

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// The RPC methods this package signs, as Privy names them. The policy engine
// matches rules on these names.
const (
	MethodSignTransaction       = "eth_signTransaction"
	MethodSendTransaction       = "eth_sendTransaction"
	MethodPersonalSign          = "personal_sign"
	MethodSignTypedData         = "eth_signTypedData_v4"
	MethodSecp256k1Sign         = "secp256k1_sign"
	MethodSign7702Authorization = "eth_sign7702Authorization"
	// MethodRawSign is the method name of POST /v1/wallets/{id}/raw_sign
	// requests and responses; it is not accepted by ParseRPC.
	MethodRawSign = "raw_sign"
)

// Encodings and hash functions named in request and response bodies.
const (
	EncodingUTF8   = "utf-8"
	EncodingHex    = "hex"
	EncodingBase64 = "base64"
	EncodingRLP    = "rlp"

	HashKeccak256 = "keccak256"
	HashSHA256    = "sha256"
)

// Request is a parsed and validated RPC or raw_sign request. Exactly one of
// Tx, Message, TypedData, Hash (alone) and Auth is set, according to Method.
// The policy engine reads these fields; nothing in a Request is secret.
// Fill changes a Request, so one Request belongs to one goroutine.
type Request struct {
	// Method is one of the Method* constants.
	Method string
	// CAIP2 is the top-level "caip2", e.g. "eip155:1", required for
	// eth_sendTransaction and optional otherwise. ChainID is its reference.
	CAIP2 string
	// Address is the top-level "address" if the client sent one. Sign
	// refuses the request unless it is the signing key's address.
	Address *common.Address
	// ReferenceID is the top-level "reference_id", echoed by
	// eth_sendTransaction.
	ReferenceID string
	// WalletID is the top-level "wallet_id" if the client sent one; the
	// caller refuses the request unless it names the wallet of the path.
	WalletID string

	// Tx is set for eth_signTransaction and eth_sendTransaction.
	Tx *TxRequest

	// Message is the personal_sign message, decoded per MessageEncoding
	// ("utf-8" or "hex"). It is signed as an EIP-191 version 0x45 message.
	Message         []byte
	MessageEncoding string

	// TypedData is the eth_signTypedData_v4 payload. Domain fields outside
	// the five that EIP-712 defines are refused. Numbers in Message are
	// *big.Int (never float64); other values are string, bool, map[string]any
	// and []any.
	TypedData *apitypes.TypedData
	// DomainTypeDerived is true if the client sent no "EIP712Domain" entry
	// in types and Cachet derived it from the domain's fields (as ethers and
	// viem do). Privy's typed-data policies compare the request's types with
	// the policy's, so they should ignore a derived EIP712Domain.
	DomainTypeDerived bool

	// Hash is the 32-byte digest that secp256k1_sign or raw_sign signs
	// without further hashing. For raw_sign with "bytes", it is the digest of
	// RawBytes under HashFunction.
	Hash         []byte
	RawBytes     []byte
	HashFunction string

	// Auth is set for eth_sign7702Authorization.
	Auth *AuthorizationRequest
}

// ChainID returns the chain the request is bound to, from the transaction's
// chain_id, the authorization's chain_id or caip2, or nil if none.
func (r *Request) ChainID() *big.Int {
	switch {
	case r.Tx != nil && r.Tx.ChainID != nil:
		return new(big.Int).Set(r.Tx.ChainID)
	case r.Auth != nil:
		return new(big.Int).Set(r.Auth.ChainID)
	case r.CAIP2 != "":
		id, _ := parseCAIP2(r.CAIP2, "caip2")
		return id
	}
	return nil
}

// AuthorizationRequest is an eth_sign7702Authorization request: sign an
// EIP-7702 authorization that delegates the wallet's code to Contract.
type AuthorizationRequest struct {
	Contract common.Address
	// ChainID is the authorization's chain; zero means every chain (EIP-7702
	// allows it; Findings warns about it).
	ChainID *big.Int
	// Nonce is the authority's account nonce the authorization is valid for.
	// nil means the client left it to Cachet: Fill reads it from the node.
	Nonce *uint64
	// Executor "self" means the wallet itself will send the type 4
	// transaction carrying this authorization, so the transaction increments
	// the nonce first and the authorization must use nonce + 1 (EIP-7702).
	// Empty means another account sends it.
	Executor string
}

// rpcFields are the top-level members of an /rpc body that Privy defines.
// Every other name, a case variant of these included, is refused: an
// authorization signature covers the whole body, so a member Cachet ignored
// would let the approvers read one request and Cachet execute another.
var rpcFields = []string{"method", "params", "caip2", "chain_type", "address", "reference_id", "sponsor",
	"signature_options", "wallet_id", "sponsor_options", "experimental_data_suffix"}

// rpcBody holds the top-level fields of an /rpc body.
type rpcBody struct {
	Method, Params, CAIP2, ChainType, Address, ReferenceID, Sponsor, SignatureOptions json.RawMessage
}

// ParseRPC parses and validates the body of POST /v1/wallets/{id}/rpc.
// Every validation failure is an *InputError. Fields a broadcaster may fill
// (nonce, gas, fees) may be absent; Sign reports them if they still are.
func ParseRPC(body []byte) (*Request, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	o, err := parseObject(body, "")
	if err != nil {
		return nil, err
	}
	if err := o.only(rpcFields...); err != nil {
		return nil, err
	}
	// Privy's optional members that would change what is signed, which
	// Cachet does not do: refused rather than ignored.
	for _, k := range []string{"sponsor_options", "experimental_data_suffix"} {
		if o.Get(k) != nil {
			return nil, inputErr(k, "is not supported")
		}
	}
	b := rpcBody{Method: o.Get("method"), Params: o.Get("params"), CAIP2: o.Get("caip2"), ChainType: o.Get("chain_type"),
		Address: o.Get("address"), ReferenceID: o.Get("reference_id"), Sponsor: o.Get("sponsor"), SignatureOptions: o.Get("signature_options")}
	var walletID string
	if raw := o.Get("wallet_id"); raw != nil {
		if walletID, err = parseString(raw, "wallet_id"); err != nil {
			return nil, err
		}
	}
	if !strictjson.Present(b.Method) {
		return nil, inputErr("method", "is required")
	}
	method, err := parseString(b.Method, "method")
	if err != nil {
		return nil, err
	}
	r := &Request{Method: method, WalletID: walletID}

	if strictjson.Present(b.ChainType) {
		ct, err := parseString(b.ChainType, "chain_type")
		if err != nil {
			return nil, err
		}
		if ct != "ethereum" {
			return nil, inputErr("chain_type", "must be \"ethereum\"")
		}
	}
	if strictjson.Present(b.Address) {
		a, err := parseAddress(b.Address, "address")
		if err != nil {
			return nil, err
		}
		r.Address = &a
	}
	if strictjson.Present(b.ReferenceID) {
		if r.ReferenceID, err = parseString(b.ReferenceID, "reference_id"); err != nil {
			return nil, err
		}
		if len(r.ReferenceID) > 256 {
			return nil, inputErr("reference_id", "exceeds 256 characters")
		}
	}
	if strictjson.Present(b.Sponsor) {
		var sponsor bool
		if err := json.Unmarshal(b.Sponsor, &sponsor); err != nil {
			return nil, inputErr("sponsor", "must be a boolean")
		}
		if sponsor {
			return nil, inputErr("sponsor", "gas sponsorship is not supported")
		}
	}
	var chainFromCAIP2 *big.Int
	if strictjson.Present(b.CAIP2) {
		if r.CAIP2, err = parseString(b.CAIP2, "caip2"); err != nil {
			return nil, err
		}
		if chainFromCAIP2, err = parseCAIP2(r.CAIP2, "caip2"); err != nil {
			return nil, err
		}
	}

	switch method {
	case MethodSignTransaction, MethodSendTransaction:
		if method == MethodSendTransaction && chainFromCAIP2 == nil {
			return nil, inputErr("caip2", "is required for eth_sendTransaction")
		}
		p, err := parseObject(b.Params, "params")
		if err != nil {
			return nil, err
		}
		if err := p.only("transaction"); err != nil {
			return nil, err
		}
		if r.Tx, err = parseTransaction(p.Get("transaction"), p.Field("transaction")); err != nil {
			return nil, err
		}
		if chainFromCAIP2 != nil {
			if r.Tx.ChainID == nil {
				r.Tx.ChainID = chainFromCAIP2
			} else if r.Tx.ChainID.Cmp(chainFromCAIP2) != 0 {
				return nil, inputErr("params.transaction.chain_id", "does not match caip2")
			}
		}
	case MethodPersonalSign:
		if err := parseSignatureOptions(b.SignatureOptions); err != nil {
			return nil, err
		}
		if err := r.parsePersonalSign(b.Params); err != nil {
			return nil, err
		}
	case MethodSignTypedData:
		if err := parseSignatureOptions(b.SignatureOptions); err != nil {
			return nil, err
		}
		p, err := parseObject(b.Params, "params")
		if err != nil {
			return nil, err
		}
		if err := p.only("typed_data"); err != nil {
			return nil, err
		}
		if r.TypedData, r.DomainTypeDerived, err = parseTypedData(p.Get("typed_data"), p.Field("typed_data")); err != nil {
			return nil, err
		}
	case MethodSecp256k1Sign:
		p, err := parseObject(b.Params, "params")
		if err != nil {
			return nil, err
		}
		if err := p.only("hash"); err != nil {
			return nil, err
		}
		if r.Hash, err = parseHash(p.Get("hash"), p.Field("hash")); err != nil {
			return nil, err
		}
	case MethodSign7702Authorization:
		if r.Auth, err = parseAuthorizationRequest(b.Params); err != nil {
			return nil, err
		}
	default:
		if len(method) > 64 {
			return nil, inputErr("method", "unsupported method")
		}
		return nil, inputErr("method", "unsupported method %q", method)
	}
	return r, nil
}

// ParseRawSign parses and validates the body of POST /v1/wallets/{id}/raw_sign:
// {"params":{"hash":"0x…"}} signs a 32-byte digest as is;
// {"params":{"bytes":…, "encoding":"utf-8"|"hex"|"base64",
// "hash_function":"keccak256"|"sha256"}} hashes the decoded bytes first.
// Privy also lists hash_function "blake2b256", which serves ed25519 chains
// (Sui); for an Ethereum key it is refused.
func ParseRawSign(body []byte) (*Request, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	o, err := parseObject(body, "")
	if err != nil {
		return nil, err
	}
	if err := o.only("params"); err != nil {
		return nil, err
	}
	p, err := parseObject(o.Get("params"), "params")
	if err != nil {
		return nil, err
	}
	if err := p.only("hash", "bytes", "encoding", "hash_function"); err != nil {
		return nil, err
	}
	r := &Request{Method: MethodRawSign}
	if h := p.Get("hash"); h != nil {
		for _, k := range []string{"bytes", "encoding", "hash_function"} {
			if p.Get(k) != nil {
				return nil, inputErr(p.Field(k), "not allowed together with hash")
			}
		}
		if r.Hash, err = parseHash(h, p.Field("hash")); err != nil {
			return nil, err
		}
		return r, nil
	}
	raw := p.Get("bytes")
	if raw == nil {
		return nil, inputErr("params", "needs hash, or bytes with encoding and hash_function")
	}
	s, err := parseString(raw, p.Field("bytes"))
	if err != nil {
		return nil, err
	}
	if len(s) > MaxRawSignBytesChars {
		return nil, inputErr(p.Field("bytes"), "exceeds %d characters", MaxRawSignBytesChars)
	}
	enc, err := parseEnum(p.Get("encoding"), p.Field("encoding"), EncodingUTF8, EncodingHex, EncodingBase64)
	if err != nil {
		return nil, err
	}
	switch enc {
	case EncodingUTF8:
		r.RawBytes = []byte(s)
	case EncodingHex:
		if r.RawBytes, err = decodeHex(strings.TrimPrefix(s, "0x"), p.Field("bytes"), MaxRawSignBytesChars); err != nil {
			return nil, err
		}
	case EncodingBase64:
		if r.RawBytes, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, inputErr(p.Field("bytes"), "is not valid standard base64")
		}
	}
	hf := p.Get("hash_function")
	if hf != nil {
		if name, _ := parseString(hf, ""); name == "blake2b256" {
			return nil, inputErr(p.Field("hash_function"), "blake2b256 is for ed25519 chains; Ethereum wallets take keccak256 or sha256")
		}
	}
	if r.HashFunction, err = parseEnum(hf, p.Field("hash_function"), HashKeccak256, HashSHA256); err != nil {
		return nil, err
	}
	if r.HashFunction == HashKeccak256 {
		r.Hash = crypto.Keccak256(r.RawBytes)
	} else {
		h := sha256.Sum256(r.RawBytes)
		r.Hash = h[:]
	}
	return r, nil
}

func (r *Request) parsePersonalSign(raw json.RawMessage) error {
	p, err := parseObject(raw, "params")
	if err != nil {
		return err
	}
	if err := p.only("message", "encoding"); err != nil {
		return err
	}
	msgRaw := p.Get("message")
	if msgRaw == nil {
		return inputErr(p.Field("message"), "is required")
	}
	msg, err := parseString(msgRaw, p.Field("message"))
	if err != nil {
		return err
	}
	r.MessageEncoding = EncodingUTF8
	if enc := p.Get("encoding"); enc != nil {
		if r.MessageEncoding, err = parseEnum(enc, p.Field("encoding"), EncodingUTF8, EncodingHex); err != nil {
			return err
		}
	}
	if r.MessageEncoding == EncodingHex {
		// Privy's Node SDK strips the 0x before sending hex ("encoding: hex
		// is sufficient"); other clients keep it. Both mean the same bytes.
		r.Message, err = decodeHex(strings.TrimPrefix(msg, "0x"), p.Field("message"), MaxHexBytes)
		return err
	}
	if len(msg) > MaxHexBytes {
		return inputErr(p.Field("message"), "exceeds %d bytes", MaxHexBytes)
	}
	if !utf8.ValidString(msg) {
		return inputErr(p.Field("message"), "is not valid UTF-8")
	}
	r.Message = []byte(msg)
	return nil
}

// parseSignatureOptions accepts Privy's {"type":"ecdsa"}, the default, and
// refuses "erc1271" (smart-account signatures), which Cachet does not make.
func parseSignatureOptions(raw json.RawMessage) error {
	if !strictjson.Present(raw) {
		return nil
	}
	o, err := parseObject(raw, "signature_options")
	if err != nil {
		return err
	}
	if err := o.only("type"); err != nil {
		return err
	}
	if t := o.Get("type"); t != nil {
		s, err := parseString(t, o.Field("type"))
		if err != nil {
			return err
		}
		if s != "ecdsa" {
			return inputErr(o.Field("type"), "only \"ecdsa\" is supported")
		}
	}
	return nil
}

func parseAuthorizationRequest(raw json.RawMessage) (*AuthorizationRequest, error) {
	p, err := parseObject(raw, "params")
	if err != nil {
		return nil, err
	}
	if err := p.only("contract", "chain_id", "nonce", "executor"); err != nil {
		return nil, err
	}
	a := &AuthorizationRequest{}
	c := p.Get("contract")
	if c == nil {
		return nil, inputErr(p.Field("contract"), "is required")
	}
	if a.Contract, err = parseAddress(c, p.Field("contract")); err != nil {
		return nil, err
	}
	id := p.Get("chain_id")
	if id == nil {
		return nil, inputErr(p.Field("chain_id"), "is required")
	}
	// EIP-7702 defines the authorization chain id as uint256.
	if a.ChainID, err = parseQuantity(id, p.Field("chain_id"), 256); err != nil {
		return nil, err
	}
	if n := p.Get("nonce"); n != nil {
		v, err := parseUint64(n, p.Field("nonce"))
		if err != nil {
			return nil, err
		}
		if v == ^uint64(0) {
			// EIP-7702 requires nonce < 2^64 - 1.
			return nil, inputErr(p.Field("nonce"), "must be below 2^64-1")
		}
		a.Nonce = &v
	}
	if e := p.Get("executor"); e != nil {
		if a.Executor, err = parseEnum(e, p.Field("executor"), "self"); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func parseHash(raw json.RawMessage, field string) ([]byte, error) {
	if raw == nil {
		return nil, inputErr(field, "is required")
	}
	return parseFixedHex(raw, field, 32)
}

func parseEnum(raw json.RawMessage, field string, allowed ...string) (string, error) {
	if raw == nil {
		return "", inputErr(field, "is required")
	}
	s, err := parseString(raw, field)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", inputErr(field, "must be one of %s", quoteList(allowed))
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// parseCAIP2 parses an EIP-155 CAIP-2 chain id, "eip155:<decimal>". Only the
// eip155 namespace is valid for an Ethereum wallet.
func parseCAIP2(s, field string) (*big.Int, error) {
	ref, ok := strings.CutPrefix(s, "eip155:")
	if !ok {
		return nil, inputErr(field, "must be \"eip155:<chain id>\"")
	}
	if ref == "" || len(ref) > 20 || strings.Trim(ref, "0123456789") != "" || (ref[0] == '0') {
		return nil, inputErr(field, "chain id must be a positive decimal integer without leading zeros")
	}
	id, err := strconv.ParseUint(ref, 10, 64)
	if err != nil {
		return nil, inputErr(field, "chain id exceeds 64 bits")
	}
	return new(big.Int).SetUint64(id), nil
}
