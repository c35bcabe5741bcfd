package device_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/recovery"
	"github.com/cachet-custody/cachet/wallet"
)

// fakeServer plays Cachet's side of embedded wallets, in memory, closely
// enough for the device's protocol: the user JWT is the user's name, and
// nothing is sealed by hardware. The real server is exercised end to end by
// cmd/cachet's TestDevice tests.
type fakeServer struct {
	t  *testing.T
	mu sync.Mutex
	// log is every request, "METHOD /path".
	log        []string
	wallets    map[string]*fakeWallet
	challenges map[string]fakeChallenge
	// damageAuth flips a byte of every auth share released; failPut
	// refuses every PUT .../recovery.
	damageAuth, failPut bool
	n                   int
}

type fakeWallet struct {
	id, user, address, method, status string
	dev, auth, rec                    recovery.Share
	sealed                            []byte
	kdf                               *recovery.KDF
}

type fakeChallenge struct {
	wallet string
	priv   *ecdh.PrivateKey
}

func newFake(t *testing.T) (*fakeServer, *client.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dev")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, wallets: map[string]*fakeWallet{}, challenges: map[string]fakeChallenge{}}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f, client.New(sock, "http://localhost", "app", "secret")
}

func (f *fakeServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

type apiErr struct {
	status int
	code   string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, r.Method+" "+r.URL.Path)
	var body map[string]any
	if r.Method != http.MethodGet {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			f.t.Errorf("fake: %s %s: body: %v", r.Method, r.URL.Path, err)
		}
	}
	out, e := f.route(r.Method, strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/embedded_wallets"), "/"), body)
	w.Header().Set("Content-Type", "application/json")
	if e != nil {
		w.WriteHeader(e.status)
		json.NewEncoder(w).Encode(map[string]string{"error": e.code, "code": e.code})
		return
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeServer) view(w *fakeWallet) map[string]any {
	return map[string]any{"id": w.id, "address": w.address, "chain_type": "ethereum", "user_id": w.user, "recovery_method": w.method,
		"status": w.status, "share_indexes": map[string]int{"device": int(w.dev.Index()), "auth": int(w.auth.Index()), "recovery": int(w.rec.Index())}}
}

func (f *fakeServer) box(dev *ecdh.PublicKey, b []byte) hpkebox.Box {
	box, err := hpkebox.SealBox(dev, b)
	if err != nil {
		f.t.Fatal(err)
	}
	return box
}

func (f *fakeServer) route(method string, parts []string, body map[string]any) (map[string]any, *apiErr) {
	// parts: [""] for create, ["", id] or ["", id, action].
	str := func(k string) string { s, _ := body[k].(string); return s }
	deviceKey := func() *ecdh.PublicKey {
		der, _ := base64.StdEncoding.DecodeString(str("device_public_key"))
		k, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			f.t.Fatalf("fake: device_public_key: %v", err)
		}
		pub, err := k.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			f.t.Fatal(err)
		}
		return pub
	}
	if len(parts) == 1 && method == http.MethodPost {
		m := body["recovery"].(map[string]any)["method"].(string)
		entropy, _ := wallet.NewEntropy()
		priv, addr, err := wallet.DeriveKey(entropy)
		if err != nil {
			f.t.Fatal(err)
		}
		clear(priv)
		d, a, rec, err := recovery.Split(entropy)
		if err != nil {
			f.t.Fatal(err)
		}
		f.n++
		w := &fakeWallet{id: fmt.Sprintf("wallet%020d", f.n), user: str("user_jwt"), address: addr.Hex(), method: m, status: "active", dev: d, auth: a, rec: rec}
		f.wallets[w.id] = w
		out := f.view(w)
		dev := deviceKey()
		out["device_share"] = f.box(dev, d)
		if m != recovery.MethodAutomatic {
			w.status = "recovery_pending"
			out["status"] = w.status
			out["recovery_share"] = f.box(dev, rec)
		}
		return out, nil
	}
	w := f.wallets[parts[1]]
	if w == nil {
		return nil, &apiErr{404, "not_found"}
	}
	if method == http.MethodGet {
		return f.view(w), nil
	}
	if str("user_jwt") != w.user {
		return nil, &apiErr{404, "not_found"}
	}
	out := f.view(w)
	auth := append(recovery.Share(nil), w.auth...)
	if f.damageAuth {
		auth[0] ^= 1
	}
	switch parts[2] {
	case "recover":
		if w.status != "active" {
			return nil, &apiErr{409, "conflict"}
		}
		dev := deviceKey()
		out["auth_share"] = f.box(dev, auth)
		if w.method == recovery.MethodAutomatic {
			out["recovery_share"] = f.box(dev, w.rec)
		} else {
			out["encrypted_recovery_share"] = f.box(dev, w.sealed)
			if w.kdf != nil {
				out["recovery_kdf"] = w.kdf
			}
		}
	case "auth_share":
		out["auth_share"] = f.box(deviceKey(), auth)
	case "challenge":
		nonce := make([]byte, 16)
		rand.Read(nonce)
		priv, _ := hpkebox.GenerateKey()
		ch := hex.EncodeToString(nonce)
		f.challenges[ch] = fakeChallenge{w.id, priv}
		return map[string]any{"challenge": ch, "expires_at": 0, "encryption_type": "HPKE",
			"encryption_public_key": base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes())}, nil
	case "recovery":
		if f.failPut {
			return nil, &apiErr{503, "unavailable"}
		}
		ch, ok := f.challenges[str("challenge")]
		delete(f.challenges, str("challenge"))
		if !ok || ch.wallet != w.id {
			return nil, &apiErr{400, "invalid_data"}
		}
		p := body["payload"].(map[string]any)
		enc, _ := base64.StdEncoding.DecodeString(p["encapsulated_key"].(string))
		ct, _ := base64.StdEncoding.DecodeString(p["ciphertext"].(string))
		sig, err := hexutil.Decode(str("signature"))
		if err != nil {
			return nil, &apiErr{400, "invalid_data"}
		}
		cd, err := recovery.ChallengeDigest(w.id, str("challenge"), sha256.Sum256(ct))
		if err != nil {
			return nil, &apiErr{400, "invalid_data"}
		}
		signer, err := wallet.DigestSigner(cd, sig)
		if err != nil || signer != common.HexToAddress(w.address) {
			return nil, &apiErr{401, "unauthorized"}
		}
		plain, err := hpkebox.Open(ch.priv, enc, ct)
		if err != nil {
			return nil, &apiErr{400, "invalid_data"}
		}
		var pl recovery.Payload
		if err := json.Unmarshal(plain, &pl); err != nil || pl.Validate() != nil {
			return nil, &apiErr{400, "invalid_data"}
		}
		var sealed []byte
		if pl.Method == recovery.MethodAutomatic {
			share, _ := base64.StdEncoding.DecodeString(pl.RecoveryShare)
			if string(share) != string(w.rec) {
				return nil, &apiErr{400, "invalid_data"}
			}
		} else {
			sealed, _ = base64.StdEncoding.DecodeString(pl.EncryptedRecoveryShare)
		}
		w.method, w.status, w.sealed, w.kdf = pl.Method, "active", sealed, pl.KDF
		return f.view(w), nil
	default:
		return nil, &apiErr{404, "not_found"}
	}
	return out, nil
}
