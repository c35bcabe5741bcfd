// Package client is a Go client of Cachet's wallet API over its Unix
// socket: app credentials, and authorization signatures made with P-256
// keys the caller holds (the canonical payload built by package quorum, the
// same code the daemon verifies with). The cachet CLI and the load tool use
// it; Privy's own SDKs need nothing from it.
package client

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/quorum"
)

// Client talks to one daemon as one app.
type Client struct {
	BaseURL   string // the daemon's public URL, "http://localhost"
	AppID     string
	AppSecret string
	// Expiry, when positive, is added to signed requests as
	// privy-request-expiry (now + Expiry).
	Expiry time.Duration
	http   *http.Client
}

// New returns a client of the daemon listening on socket.
func New(socket, baseURL, appID, appSecret string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 256,
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), AppID: appID, AppSecret: appSecret,
		Expiry: 15 * time.Minute, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// AppFile is the JSON that `cachet dev` writes to DIR/app.json.
type AppFile struct {
	AppID     string `json:"app_id"`
	AppSecret string `json:"app_secret"`
	Socket    string `json:"socket"`
	PublicURL string `json:"public_url"`
}

// FromAppFile returns a client described by an app.json file.
func FromAppFile(path string) (*Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f AppFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.AppID == "" || f.AppSecret == "" || f.Socket == "" {
		return nil, fmt.Errorf("%s: app_id, app_secret and socket are required", path)
	}
	if f.PublicURL == "" {
		f.PublicURL = "http://localhost"
	}
	return New(f.Socket, f.PublicURL, f.AppID, f.AppSecret), nil
}

// Request is one API call.
type Request struct {
	Method string
	Path   string // "/v1/wallets/ID/rpc"
	Body   any    // marshalled as JSON; nil for none
	// Keys sign the request; none means an unsigned request.
	Keys           []*ecdsa.PrivateKey
	IdempotencyKey string
}

// Response is the answer.
type Response struct {
	Status int
	Body   []byte
}

// Error is a non-2xx answer in Privy's error shape.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message) }

// Do sends req and returns the response; a non-2xx response is an *Error.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if raw, ok := req.Body.(json.RawMessage); ok {
			body = raw
		} else if body, err = json.Marshal(req.Body); err != nil {
			return nil, err
		}
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, c.BaseURL+req.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.SetBasicAuth(c.AppID, c.AppSecret)
	hr.Header.Set("privy-app-id", c.AppID)
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.IdempotencyKey != "" {
		hr.Header.Set("privy-idempotency-key", req.IdempotencyKey)
	}
	if len(req.Keys) > 0 {
		if c.Expiry > 0 {
			hr.Header.Set("privy-request-expiry", strconv.FormatInt(time.Now().Add(c.Expiry).UnixMilli(), 10))
		}
		sig, err := Sign(quorum.Request{Method: req.Method, URL: c.BaseURL + req.Path, Body: body, Headers: hr.Header}, req.Keys)
		if err != nil {
			return nil, err
		}
		hr.Header.Set("privy-authorization-signature", sig)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(out, e) != nil || e.Code == "" {
			e.Message = string(out)
		}
		return nil, e
	}
	return &Response{Status: resp.StatusCode, Body: out}, nil
}

// Sign returns the privy-authorization-signature value for a request signed
// by each key: base64 DER ECDSA over SHA-256 of the canonical payload,
// comma-separated.
func Sign(r quorum.Request, ks []*ecdsa.PrivateKey) (string, error) {
	payload, err := quorum.Payload(r)
	if err != nil {
		return "", err
	}
	digest := sha256.Sum256(payload)
	sigs := make([]string, len(ks))
	for i, k := range ks {
		der, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
		if err != nil {
			return "", err
		}
		sigs[i] = base64.StdEncoding.EncodeToString(der)
	}
	return strings.Join(sigs, ","), nil
}

// OpenUserKey opens the user key that POST /v1/wallets/authenticate
// returns, encrypted under HPKE to recipient: base64 PKCS#8 inside the box.
func OpenUserKey(recipient *ecdh.PrivateKey, box hpkebox.Box) (*ecdsa.PrivateKey, error) {
	text, err := hpkebox.OpenBox(recipient, box.EncapsulatedKey, box.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("user key: %w", err)
	}
	return ParsePrivateKey(string(text))
}

// ParsePrivateKey reads a P-256 authorization key as Privy's SDKs take it:
// base64 PKCS#8 DER, optionally prefixed "wallet-auth:" (as Privy's dashboard
// shows keys), or PEM.
func ParsePrivateKey(s string) (*ecdsa.PrivateKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "wallet-auth:"), "wallet-api:")
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), "")); err != nil {
			return nil, errors.New("authorization key: not base64 PKCS#8 or PEM")
		}
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(der); err2 == nil {
			k = ek
		} else {
			return nil, fmt.Errorf("authorization key: %w", err)
		}
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve.Params().Name != "P-256" {
		return nil, errors.New("authorization key: not a P-256 key")
	}
	return ek, nil
}

// ReadPrivateKeyFile reads ParsePrivateKey's forms from a file.
func ReadPrivateKeyFile(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	k, err := ParsePrivateKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// EncodePrivateKey returns the base64 PKCS#8 form Privy's SDKs take.
func EncodePrivateKey(k *ecdsa.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}
