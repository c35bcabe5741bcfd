package wallet

import (
	"crypto/ecdsa"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	"github.com/holiman/uint256"

	"github.com/cachet-custody/cachet/internal/clip"
)

// Response is the body Privy returns for an RPC or raw_sign request:
// {"method": <method>, "data": {...}}. Data is one of *TransactionData,
// *SendTransactionData, *SignatureData or *AuthorizationData.
type Response struct {
	Method string `json:"method"`
	Data   any    `json:"data"`

	// SignedTx is the signed transaction (EIP-2718 binary) of an
	// eth_sendTransaction, for Broadcast. It is not part of the JSON.
	SignedTx []byte `json:"-"`
}

// TransactionData is the data of an eth_signTransaction response:
// {"signed_transaction":"0x02f8…","encoding":"rlp"}. The bytes are the
// EIP-2718 encoding (types.Transaction.MarshalBinary): plain RLP for type 0,
// type byte then RLP for the others, which is what eth_sendRawTransaction
// takes.
type TransactionData struct {
	SignedTransaction string `json:"signed_transaction"`
	Encoding          string `json:"encoding"`
}

// SendTransactionData is the data of an eth_sendTransaction response:
// {"hash":"0x…","caip2":"eip155:1"} plus reference_id if the request had one.
// Privy's optional transaction_id (its own transaction record) has no
// equivalent here and is omitted.
type SendTransactionData struct {
	Hash        string `json:"hash"`
	CAIP2       string `json:"caip2"`
	ReferenceID string `json:"reference_id,omitempty"`
}

// SignatureData is the data of personal_sign, eth_signTypedData_v4,
// secp256k1_sign and raw_sign responses: {"signature":"0x…","encoding":"hex"}
// where the signature is 65 bytes r ‖ s ‖ v with v = 27 or 28.
type SignatureData struct {
	Signature string `json:"signature"`
	Encoding  string `json:"encoding"`
}

// AuthorizationData is the data of an eth_sign7702Authorization response.
type AuthorizationData struct {
	Authorization Authorization `json:"authorization"`
}

// Authorization is a signed EIP-7702 authorization in Privy's shape. Privy's
// schema allows chain_id and nonce to be a hex string or an integer; Cachet
// always answers JSON integers, which Privy's Go SDK (int64 variant) and its
// viem adapter (Number(...)) both read. r and s are 32-byte 0x-hex, y_parity
// is 0 or 1, and contract is EIP-55 checksummed.
type Authorization struct {
	Contract string   `json:"contract"`
	ChainID  *big.Int `json:"chain_id"`
	Nonce    uint64   `json:"nonce"`
	R        string   `json:"r"`
	S        string   `json:"s"`
	YParity  uint8    `json:"y_parity"`
}

// Sign signs the request with priv, a 32-byte secp256k1 private key that the
// caller unsealed and will zero, and returns the Privy response for the
// method. It refuses (with *InputError) a request whose top-level address or
// transaction from is not priv's address, and a transaction or authorization
// with fields still missing (see TxRequest.Missing and Fill).
//
// v convention: personal_sign, eth_signTypedData_v4, secp256k1_sign and
// raw_sign all return v = 27 or 28. For the first two this is what every
// Ethereum wallet returns. For raw hashes Privy documents no convention; 27/28
// is what viem's own local account returns from sign({hash}) (viem
// src/accounts/utils/sign.ts, serializeSignature), and Privy's viem adapter
// (@privy-io/node createViemAccount) hands secp256k1_sign's signature to viem
// unchanged as that account's sign result. It is also what Solidity's
// ecrecover and OpenZeppelin's ECDSA.recover accept; 0/1 fails there.
func (r *Request) Sign(priv []byte) (*Response, error) {
	var resp *Response
	err := withKey(priv, func(k *ecdsa.PrivateKey) error {
		var err error
		resp, err = r.sign(k, crypto.PubkeyToAddress(k.PublicKey))
		return err
	})
	return resp, err
}

// SignAs is Sign for a caller that derived addr from priv itself and kept
// it (custody stores each wallet's address, and its sealed key opens only
// under that wallet's id). It skips recomputing the public key, a scalar
// multiplication that costs about as much as the signature.
func (r *Request) SignAs(priv []byte, addr common.Address) (*Response, error) {
	var resp *Response
	err := withScalar(priv, func(k *ecdsa.PrivateKey) error {
		var err error
		resp, err = r.sign(k, addr)
		return err
	})
	return resp, err
}

func (r *Request) sign(k *ecdsa.PrivateKey, addr common.Address) (*Response, error) {
	var resp *Response
	err := func() error {
		if r.Address != nil && *r.Address != addr {
			return inputErr("address", "is not this wallet's address")
		}
		var err error
		switch r.Method {
		case MethodSignTransaction, MethodSendTransaction:
			resp, err = r.signTransaction(k, addr)
		case MethodPersonalSign:
			resp, err = r.signDigest(k, accounts.TextHash(r.Message))
		case MethodSignTypedData:
			var h []byte
			if h, _, err = apitypes.TypedDataAndHash(*r.TypedData); err != nil {
				return inputErr("params.typed_data", "cannot be hashed: %s", clip.To(err.Error(), 200))
			}
			resp, err = r.signDigest(k, h)
		case MethodSecp256k1Sign, MethodRawSign:
			if len(r.Hash) != 32 {
				return inputErr("params.hash", "must be exactly 32 bytes")
			}
			resp, err = r.signDigest(k, r.Hash)
		case MethodSign7702Authorization:
			resp, err = r.signAuthorization(k)
		default:
			return inputErr("method", "unsupported method")
		}
		return err
	}()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Digest returns the 32-byte hash that Sign would sign for every method but
// the transaction methods (whose hash depends on filled fields; use
// TxRequest.Unsigned and types.LatestSignerForChainID(chainID).Hash). An
// HSM-backed signer can sign this digest and reuse the response builders.
func (r *Request) Digest() ([]byte, error) {
	switch r.Method {
	case MethodPersonalSign:
		return accounts.TextHash(r.Message), nil
	case MethodSignTypedData:
		h, _, err := apitypes.TypedDataAndHash(*r.TypedData)
		if err != nil {
			return nil, inputErr("params.typed_data", "cannot be hashed: %s", clip.To(err.Error(), 200))
		}
		return h, nil
	case MethodSecp256k1Sign, MethodRawSign:
		return append([]byte(nil), r.Hash...), nil
	case MethodSign7702Authorization:
		if r.Auth.Nonce == nil {
			return nil, inputErr("params.nonce", "is required (or filled from the chain)")
		}
		a := r.authorization()
		h := a.SigHash()
		return h[:], nil
	}
	return nil, inputErr("method", "has no single digest")
}

func (r *Request) signDigest(k *ecdsa.PrivateKey, digest []byte) (*Response, error) {
	sig, err := crypto.Sign(digest, k)
	if err != nil {
		return nil, fmt.Errorf("wallet: signing: %w", err)
	}
	sig[64] += 27
	return &Response{Method: r.Method, Data: &SignatureData{Signature: hexutil.Encode(sig), Encoding: EncodingHex}}, nil
}

func (r *Request) signTransaction(k *ecdsa.PrivateKey, addr common.Address) (*Response, error) {
	t := r.Tx
	if t.From != nil && *t.From != addr {
		return nil, inputErr("params.transaction.from", "is not this wallet's address")
	}
	tx, err := t.Unsigned()
	if err != nil {
		return nil, err
	}
	// LatestSignerForChainID signs type 0 with EIP-155 (v = 35 + 2·chainID
	// + recovery id) and typed transactions with their y-parity. ChainID is
	// never nil here: Unsigned requires it, so no unprotected (pre-EIP-155)
	// transaction is ever produced.
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(t.ChainID), k)
	if err != nil {
		return nil, fmt.Errorf("wallet: signing transaction: %w", err)
	}
	raw, err := signed.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("wallet: encoding transaction: %w", err)
	}
	if r.Method == MethodSendTransaction {
		return &Response{
			Method:   r.Method,
			Data:     &SendTransactionData{Hash: signed.Hash().Hex(), CAIP2: r.CAIP2, ReferenceID: r.ReferenceID},
			SignedTx: raw,
		}, nil
	}
	return &Response{Method: r.Method, Data: &TransactionData{SignedTransaction: hexutil.Encode(raw), Encoding: EncodingRLP}}, nil
}

func (r *Request) authorization() types.SetCodeAuthorization {
	return types.SetCodeAuthorization{
		ChainID: *uint256.MustFromBig(r.Auth.ChainID),
		Address: r.Auth.Contract,
		Nonce:   *r.Auth.Nonce,
	}
}

func (r *Request) signAuthorization(k *ecdsa.PrivateKey) (*Response, error) {
	if r.Auth.Nonce == nil {
		return nil, inputErr("params.nonce", "is required (or filled from the chain)")
	}
	a, err := types.SignSetCode(k, r.authorization())
	if err != nil {
		return nil, fmt.Errorf("wallet: signing authorization: %w", err)
	}
	rb, sb := a.R.Bytes32(), a.S.Bytes32()
	return &Response{Method: r.Method, Data: &AuthorizationData{Authorization: Authorization{
		Contract: a.Address.Hex(),
		ChainID:  a.ChainID.ToBig(),
		Nonce:    a.Nonce,
		R:        hexutil.Encode(rb[:]),
		S:        hexutil.Encode(sb[:]),
		YParity:  a.V,
	}}}, nil
}

// PersonalSigner returns the address whose key made sig, a personal_sign
// (EIP-191 version 0x45) signature over message in the 65-byte r || s || v
// form Sign returns (v 27 or 28; 0 or 1 accepted). A signature with a high
// S is refused, as Ethereum clients refuse it (EIP-2), so that each message
// has one valid signature per key.
func PersonalSigner(message []byte, sig []byte) (common.Address, error) {
	return DigestSigner(accounts.TextHash(message), sig)
}

// DigestSigner returns the address whose key signed the 32-byte digest, a
// signature in the form Sign returns, with PersonalSigner's checks. Use it
// for an EIP-712 hash (apitypes.TypedDataAndHash).
func DigestSigner(digest []byte, sig []byte) (common.Address, error) {
	if len(digest) != 32 {
		return common.Address{}, inputErr("digest", "must be 32 bytes")
	}
	if len(sig) != crypto.SignatureLength {
		return common.Address{}, inputErr("signature", "must be 65 bytes (r, s, v)")
	}
	s := append([]byte(nil), sig...)
	if s[64] >= 27 {
		s[64] -= 27
	}
	if s[64] > 1 {
		return common.Address{}, inputErr("signature", "has a recovery id other than 27 or 28")
	}
	if !crypto.ValidateSignatureValues(s[64], new(big.Int).SetBytes(s[:32]), new(big.Int).SetBytes(s[32:64]), true) {
		return common.Address{}, inputErr("signature", "has r or s out of range, or a high s")
	}
	pub, err := crypto.SigToPub(digest, s)
	if err != nil {
		return common.Address{}, inputErr("signature", "recovers no public key")
	}
	return crypto.PubkeyToAddress(*pub), nil
}
