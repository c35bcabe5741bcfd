package signer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/internal/peercred"
	"github.com/cachet-custody/cachet/internal/strictjson"
)

// JSON-RPC 2.0 error codes: the specification's, EIP-1474's and EIP-1193's.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeNoMethod       = -32601
	codeInvalidParams  = -32602
	codeInternal       = -32603
	codeServer         = -32000 // a state conflict; retry
	codeUnavailable    = -32002 // resource unavailable (the chain's node)
	codeRejected       = -32003 // transaction rejected: a policy denial
	codeLimitExceeded  = -32005
	codeUnauthorized   = 4100 // the requested account or method is not authorized
)

// maxDepth bounds the nesting of a message (typed data is the deepest).
const maxDepth = 64

// maxBatch bounds the requests of one batch.
const maxBatch = 100

var nullID = json.RawMessage("null")

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *rpcError) Error() string { return e.Message }

type response struct {
	ID     json.RawMessage
	Result any
	Error  *rpcError
}

func marshalResponse(r response) ([]byte, error) {
	if r.Error != nil {
		return json.Marshal(struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Error   *rpcError       `json:"error"`
		}{"2.0", r.ID, r.Error})
	}
	return json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result"`
	}{"2.0", r.ID, r.Result})
}

func invalidParams(format string, args ...any) *rpcError {
	return &rpcError{Code: codeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

// messageReader splits a connection into JSON values: newline-delimited,
// as geth and web3 send them, or back to back, as ethers' IPC provider
// writes them.
type messageReader struct {
	br  *boundedReader
	dec *json.Decoder
}

func newMessageReader(br *boundedReader) *messageReader {
	return &messageReader{br: br, dec: json.NewDecoder(br)}
}

func (m *messageReader) next() (json.RawMessage, error) {
	var raw json.RawMessage
	if err := m.dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, errors.New("the message is not valid JSON")
		}
		return nil, err
	}
	m.br.n = int64(m.dec.Buffered().(*bytes.Reader).Len())
	return raw, nil
}

// handleMessage answers one message, a request or a batch; nil when there
// is nothing to answer (notifications).
func (e *Endpoint) handleMessage(ctx context.Context, cred peercred.Cred, raw json.RawMessage) []byte {
	if err := (*strictjson.Options)(nil).CheckValue(raw, maxDepth); err != nil {
		out, _ := marshalResponse(response{ID: nullID, Error: &rpcError{Code: codeInvalidRequest, Message: strictMessage(err)}})
		return out
	}
	t := bytes.TrimSpace(raw)
	if len(t) > 0 && t[0] == '[' {
		items, err := strictjson.ParseArray(t, "")
		if err != nil || len(items) == 0 {
			out, _ := marshalResponse(response{ID: nullID, Error: &rpcError{Code: codeInvalidRequest, Message: "a batch must be a non-empty array of requests"}})
			return out
		}
		if len(items) > maxBatch {
			out, _ := marshalResponse(response{ID: nullID, Error: &rpcError{Code: codeLimitExceeded, Message: fmt.Sprintf("a batch holds at most %d requests", maxBatch)}})
			return out
		}
		var outs []json.RawMessage
		for _, it := range items {
			if r, ok := e.handleRequest(ctx, cred, it); ok {
				b, _ := marshalResponse(r)
				outs = append(outs, b)
			}
		}
		if len(outs) == 0 {
			return nil
		}
		b, _ := json.Marshal(outs)
		return b
	}
	r, ok := e.handleRequest(ctx, cred, t)
	if !ok {
		return nil
	}
	out, _ := marshalResponse(r)
	return out
}

// request is one JSON-RPC request, read with exact member names.
type request struct {
	ID     json.RawMessage // nil for a notification
	Method string
	Params []json.RawMessage
	// raw is the request as sent, for forwarding.
	raw json.RawMessage
}

func parseRequest(raw json.RawMessage) (*request, *rpcError) {
	o, err := (*strictjson.Options)(nil).ParseObject(raw, "")
	if err != nil {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "a request must be a JSON object"}
	}
	r := &request{raw: raw}
	if id := o.Get("id"); id != nil {
		switch t := bytes.TrimSpace(id); t[0] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			r.ID = t
		default:
			return nil, &rpcError{Code: codeInvalidRequest, Message: "id must be a string, a number or null"}
		}
	}
	if err := o.Only("jsonrpc", "id", "method", "params"); err != nil {
		return r, &rpcError{Code: codeInvalidRequest, Message: strictMessage(err)}
	}
	var version string
	if err := json.Unmarshal(o.Get("jsonrpc"), &version); err != nil || version != "2.0" {
		return r, &rpcError{Code: codeInvalidRequest, Message: `jsonrpc must be "2.0"`}
	}
	if err := json.Unmarshal(o.Get("method"), &r.Method); err != nil || r.Method == "" || len(r.Method) > 128 {
		return r, &rpcError{Code: codeInvalidRequest, Message: "method must be a method name"}
	}
	if p := o.Get("params"); strictjson.Present(p) {
		if r.Params, err = strictjson.ParseArray(p, "params"); err != nil {
			return r, invalidParams("params must be an array (positional parameters)")
		}
	}
	return r, nil
}

// handleRequest answers one request; ok is false for a notification.
func (e *Endpoint) handleRequest(ctx context.Context, cred peercred.Cred, raw json.RawMessage) (response, bool) {
	r, perr := parseRequest(raw)
	if perr != nil {
		id := nullID
		if r != nil && r.ID != nil {
			id = r.ID
		}
		return response{ID: id, Error: perr}, true
	}
	result, err := e.dispatch(ctx, cred, r)
	if r.ID == nil {
		return response{}, false
	}
	if err != nil {
		return response{ID: r.ID, Error: e.toRPCError(r.Method, err)}, true
	}
	return response{ID: r.ID, Result: result}, true
}

func strictMessage(err error) string {
	var se *strictjson.Error
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, strictjson.ErrInvalidUTF8):
		return "the message is not valid UTF-8"
	case errors.Is(err, strictjson.ErrTrailingData):
		return "the message has data after its JSON value"
	}
	return "the message is not valid JSON"
}
