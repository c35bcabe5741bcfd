package wallet

import (
	"encoding/json"
	"math/big"
	"strings"

	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/holiman/uint256"
)

// TxRequest is the "transaction" of an eth_signTransaction or
// eth_sendTransaction, parsed from Privy's snake_case fields. Pointer fields
// are nil when the client left them out; Missing lists those that must be
// filled before the transaction can be signed.
type TxRequest struct {
	// Type is the resolved EIP-2718 type: 0 (legacy, EIP-155), 1 (EIP-2930),
	// 2 (EIP-1559) or 4 (EIP-7702). TypeGiven says whether the client sent
	// it; see parseTransaction for the default.
	Type      uint8
	TypeGiven bool

	// ChainID comes from chain_id or, if absent, from the top-level caip2.
	ChainID *big.Int
	// From, if given, must be the wallet's address; Sign checks it.
	From *common.Address
	// To is nil for a contract creation (not allowed for type 4).
	To    *common.Address
	Nonce *uint64
	// Value is never nil; an absent value is zero.
	Value *big.Int
	Data  []byte

	GasLimit             *uint64
	GasPrice             *big.Int // types 0 and 1
	MaxFeePerGas         *big.Int // types 2 and 4
	MaxPriorityFeePerGas *big.Int // types 2 and 4

	AccessList types.AccessList // types 1, 2 and 4
	// AuthorizationList holds already-signed EIP-7702 authorizations (type 4).
	AuthorizationList []types.SetCodeAuthorization
}

var txFields = []string{
	"type", "chain_id", "from", "to", "nonce", "value", "data", "gas_limit",
	"gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "access_list",
	"authorization_list",
}

// parseTransaction parses params.transaction.
//
// Type default, when "type" is absent (Privy's Go SDK omits a zero type, and
// viem's adapter sends 2 when the viem type is unset):
//   - authorization_list present → 4;
//   - gas_price present → 0, or 1 if access_list is also present;
//   - otherwise → 2 (EIP-1559), fees left to the filler if absent.
//
// gas_price together with max_fee_per_gas or max_priority_fee_per_gas is
// refused rather than guessed.
func parseTransaction(raw json.RawMessage, path string) (*TxRequest, error) {
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	if err := o.only(txFields...); err != nil {
		return nil, err
	}
	t := &TxRequest{Value: new(big.Int)}

	if v := o.Get("type"); v != nil {
		n, err := parseQuantity(v, o.Field("type"), 8)
		if err != nil {
			return nil, err
		}
		switch n.Uint64() {
		case types.LegacyTxType, types.AccessListTxType, types.DynamicFeeTxType, types.SetCodeTxType:
		case types.BlobTxType:
			return nil, inputErr(o.Field("type"), "blob transactions (type 3) are not supported")
		default:
			return nil, inputErr(o.Field("type"), "must be 0, 1, 2 or 4")
		}
		t.Type, t.TypeGiven = uint8(n.Uint64()), true
	}
	if v := o.Get("chain_id"); v != nil {
		id, err := parseUint64(v, o.Field("chain_id"))
		if err != nil {
			return nil, err
		}
		if id == 0 {
			return nil, inputErr(o.Field("chain_id"), "must be positive")
		}
		t.ChainID = new(big.Int).SetUint64(id)
	}
	if v := o.Get("from"); v != nil {
		a, err := parseAddress(v, o.Field("from"))
		if err != nil {
			return nil, err
		}
		t.From = &a
	}
	if v := o.Get("to"); v != nil {
		// An empty string is how some clients spell "no recipient".
		if s, _ := parseString(v, ""); s != "" || v[0] != '"' {
			a, err := parseAddress(v, o.Field("to"))
			if err != nil {
				return nil, err
			}
			t.To = &a
		}
	}
	if v := o.Get("nonce"); v != nil {
		n, err := parseUint64(v, o.Field("nonce"))
		if err != nil {
			return nil, err
		}
		if n == ^uint64(0) {
			return nil, inputErr(o.Field("nonce"), "must be below 2^64-1") // EIP-2681
		}
		t.Nonce = &n
	}
	if v := o.Get("value"); v != nil {
		if t.Value, err = parseQuantity(v, o.Field("value"), 256); err != nil {
			return nil, err
		}
	}
	if v := o.Get("data"); v != nil {
		if t.Data, err = parseHexBytes(v, o.Field("data"), MaxHexBytes); err != nil {
			return nil, err
		}
	}
	if v := o.Get("gas_limit"); v != nil {
		g, err := parseUint64(v, o.Field("gas_limit"))
		if err != nil {
			return nil, err
		}
		t.GasLimit = &g
	}
	for _, f := range []struct {
		name string
		dst  **big.Int
	}{
		{"gas_price", &t.GasPrice},
		{"max_fee_per_gas", &t.MaxFeePerGas},
		{"max_priority_fee_per_gas", &t.MaxPriorityFeePerGas},
	} {
		if v := o.Get(f.name); v != nil {
			if *f.dst, err = parseQuantity(v, o.Field(f.name), 256); err != nil {
				return nil, err
			}
		}
	}
	hasAccessList := o.Get("access_list") != nil
	if hasAccessList {
		if t.AccessList, err = parseAccessList(o.Get("access_list"), o.Field("access_list")); err != nil {
			return nil, err
		}
	}
	hasAuthList := o.Get("authorization_list") != nil
	if hasAuthList {
		if t.AuthorizationList, err = parseAuthorizationList(o.Get("authorization_list"), o.Field("authorization_list")); err != nil {
			return nil, err
		}
	}

	dynamic := t.MaxFeePerGas != nil || t.MaxPriorityFeePerGas != nil
	if !t.TypeGiven {
		switch {
		case hasAuthList:
			t.Type = types.SetCodeTxType
		case t.GasPrice != nil && !dynamic && hasAccessList:
			t.Type = types.AccessListTxType
		case t.GasPrice != nil && !dynamic:
			t.Type = types.LegacyTxType
		case t.GasPrice != nil:
			return nil, inputErr(o.Field("gas_price"), "not allowed together with max_fee_per_gas or max_priority_fee_per_gas")
		default:
			t.Type = types.DynamicFeeTxType
		}
	}
	switch t.Type {
	case types.LegacyTxType, types.AccessListTxType:
		for _, f := range []string{"max_fee_per_gas", "max_priority_fee_per_gas"} {
			if o.Get(f) != nil {
				return nil, inputErr(o.Field(f), "not allowed for type %d transactions; use gas_price", t.Type)
			}
		}
	case types.DynamicFeeTxType, types.SetCodeTxType:
		if t.GasPrice != nil {
			return nil, inputErr(o.Field("gas_price"), "not allowed for type %d transactions; use max_fee_per_gas and max_priority_fee_per_gas", t.Type)
		}
		if t.MaxFeePerGas != nil && t.MaxPriorityFeePerGas != nil && t.MaxPriorityFeePerGas.Cmp(t.MaxFeePerGas) > 0 {
			return nil, inputErr(o.Field("max_priority_fee_per_gas"), "exceeds max_fee_per_gas")
		}
	}
	if t.Type == types.LegacyTxType && hasAccessList {
		return nil, inputErr(o.Field("access_list"), "not allowed for type 0 transactions")
	}
	if t.Type != types.SetCodeTxType && hasAuthList {
		return nil, inputErr(o.Field("authorization_list"), "only allowed for type 4 transactions")
	}
	if t.Type == types.SetCodeTxType {
		if len(t.AuthorizationList) == 0 {
			return nil, inputErr(o.Field("authorization_list"), "type 4 transactions need at least one authorization")
		}
		if t.To == nil {
			return nil, inputErr(o.Field("to"), "type 4 transactions cannot create contracts")
		}
	}
	return t, nil
}

func parseAccessList(raw json.RawMessage, path string) (types.AccessList, error) {
	items, err := parseArray(raw, path)
	if err != nil {
		return nil, err
	}
	al := make(types.AccessList, 0, len(items))
	for i, item := range items {
		p := strictjson.IndexPath(path, i)
		o, err := parseObject(item, p)
		if err != nil {
			return nil, err
		}
		if err := o.only("address", "storage_keys"); err != nil {
			return nil, err
		}
		a := o.Get("address")
		if a == nil {
			return nil, inputErr(o.Field("address"), "is required")
		}
		tuple := types.AccessTuple{StorageKeys: []common.Hash{}}
		if tuple.Address, err = parseAddress(a, o.Field("address")); err != nil {
			return nil, err
		}
		if sk := o.Get("storage_keys"); sk != nil {
			keys, err := parseArray(sk, o.Field("storage_keys"))
			if err != nil {
				return nil, err
			}
			for j, k := range keys {
				b, err := parseFixedHex(k, strictjson.IndexPath(o.Field("storage_keys"), j), 32)
				if err != nil {
					return nil, err
				}
				tuple.StorageKeys = append(tuple.StorageKeys, common.BytesToHash(b))
			}
		}
		al = append(al, tuple)
	}
	return al, nil
}

// parseAuthorizationList parses already-signed EIP-7702 authorizations:
// {contract (or address), chain_id, nonce, r, s, y_parity}. Privy's schema
// names the delegate "contract"; "address" is go-ethereum's and viem's name.
func parseAuthorizationList(raw json.RawMessage, path string) ([]types.SetCodeAuthorization, error) {
	items, err := parseArray(raw, path)
	if err != nil {
		return nil, err
	}
	list := make([]types.SetCodeAuthorization, 0, len(items))
	for i, item := range items {
		p := strictjson.IndexPath(path, i)
		o, err := parseObject(item, p)
		if err != nil {
			return nil, err
		}
		if err := o.only("contract", "address", "chain_id", "nonce", "r", "s", "y_parity"); err != nil {
			return nil, err
		}
		var a types.SetCodeAuthorization
		key := "contract"
		if o.Get("contract") == nil {
			key = "address"
		} else if o.Get("address") != nil {
			return nil, inputErr(o.Field("address"), "not allowed together with contract")
		}
		if o.Get(key) == nil {
			return nil, inputErr(o.Field("contract"), "is required")
		}
		if a.Address, err = parseAddress(o.Get(key), o.Field(key)); err != nil {
			return nil, err
		}
		for _, f := range []string{"chain_id", "nonce", "r", "s", "y_parity"} {
			if o.Get(f) == nil {
				return nil, inputErr(o.Field(f), "is required")
			}
		}
		id, err := parseQuantity(o.Get("chain_id"), o.Field("chain_id"), 256)
		if err != nil {
			return nil, err
		}
		a.ChainID = *uint256.MustFromBig(id)
		if a.Nonce, err = parseUint64(o.Get("nonce"), o.Field("nonce")); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name string
			dst  *uint256.Int
		}{{"r", &a.R}, {"s", &a.S}} {
			n, err := parseQuantity(o.Get(f.name), o.Field(f.name), 256)
			if err != nil {
				return nil, err
			}
			f.dst.SetFromBig(n)
		}
		v, err := parseQuantity(o.Get("y_parity"), o.Field("y_parity"), 8)
		if err != nil {
			return nil, err
		}
		if v.Uint64() > 1 {
			return nil, inputErr(o.Field("y_parity"), "must be 0 or 1")
		}
		a.V = uint8(v.Uint64())
		list = append(list, a)
	}
	return list, nil
}

// Missing lists, by Privy field name, the fields that must be set before the
// transaction can be signed: chain_id, nonce, gas_limit, and gas_price (types
// 0 and 1) or max_fee_per_gas and max_priority_fee_per_gas (types 2 and 4).
// An eth_sendTransaction fills them with Fill; eth_signTransaction may too,
// if the caller chooses (Privy's own end-to-end tests sign type 2
// transactions without nonce or fees, so Privy fills them for both methods).
func (t *TxRequest) Missing() []string {
	var m []string
	if t.ChainID == nil {
		m = append(m, "chain_id")
	}
	if t.Nonce == nil {
		m = append(m, "nonce")
	}
	if t.GasLimit == nil {
		m = append(m, "gas_limit")
	}
	switch t.Type {
	case types.LegacyTxType, types.AccessListTxType:
		if t.GasPrice == nil {
			m = append(m, "gas_price")
		}
	default:
		if t.MaxFeePerGas == nil {
			m = append(m, "max_fee_per_gas")
		}
		if t.MaxPriorityFeePerGas == nil {
			m = append(m, "max_priority_fee_per_gas")
		}
	}
	return m
}

// Unsigned builds the unsigned go-ethereum transaction. Every field in
// Missing must be set; otherwise the error is an *InputError on
// params.transaction listing them.
func (t *TxRequest) Unsigned() (*types.Transaction, error) {
	if m := t.Missing(); len(m) > 0 {
		return nil, inputErr("params.transaction", "missing %s; every signed field must be given (or filled from the chain)", strings.Join(m, ", "))
	}
	if t.MaxFeePerGas != nil && t.MaxPriorityFeePerGas != nil && t.MaxPriorityFeePerGas.Cmp(t.MaxFeePerGas) > 0 {
		return nil, inputErr("params.transaction.max_priority_fee_per_gas", "exceeds max_fee_per_gas")
	}
	data := append([]byte(nil), t.Data...)
	value := t.Value
	if value == nil {
		value = new(big.Int)
	}
	switch t.Type {
	case types.LegacyTxType:
		return types.NewTx(&types.LegacyTx{
			Nonce: *t.Nonce, GasPrice: t.GasPrice, Gas: *t.GasLimit,
			To: t.To, Value: value, Data: data,
		}), nil
	case types.AccessListTxType:
		return types.NewTx(&types.AccessListTx{
			ChainID: t.ChainID, Nonce: *t.Nonce, GasPrice: t.GasPrice, Gas: *t.GasLimit,
			To: t.To, Value: value, Data: data, AccessList: t.AccessList,
		}), nil
	case types.DynamicFeeTxType:
		return types.NewTx(&types.DynamicFeeTx{
			ChainID: t.ChainID, Nonce: *t.Nonce, GasTipCap: t.MaxPriorityFeePerGas, GasFeeCap: t.MaxFeePerGas,
			Gas: *t.GasLimit, To: t.To, Value: value, Data: data, AccessList: t.AccessList,
		}), nil
	case types.SetCodeTxType:
		return types.NewTx(&types.SetCodeTx{
			ChainID:   uint256.MustFromBig(t.ChainID),
			Nonce:     *t.Nonce,
			GasTipCap: uint256.MustFromBig(t.MaxPriorityFeePerGas),
			GasFeeCap: uint256.MustFromBig(t.MaxFeePerGas),
			Gas:       *t.GasLimit, To: *t.To, Value: uint256.MustFromBig(value), Data: data,
			AccessList: t.AccessList, AuthList: t.AuthorizationList,
		}), nil
	}
	return nil, inputErr("params.transaction.type", "must be 0, 1, 2 or 4")
}
