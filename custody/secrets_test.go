package custody_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/wallet"
)

// TestSecretsAtRest: the database holds wallet secrets only sealed by the
// hardware, and no response carries them.
func TestSecretsAtRest(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	var outputs [][]byte
	var ws []string
	for i := range 3 {
		body := `{"chain_type":"ethereum"}`
		if i == 0 {
			body = `{"chain_type":"ethereum","owner":{"public_key":"` + k.pub + `"}}`
		}
		w, err := e.createWalletReq(request{body: []byte(body), idem: "create-" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w.ID)
		outputs = append(outputs, mustJSON(t, w))
		var signers []authKey
		if i == 0 {
			signers = keysOf(k)
		}
		out, err := e.rpc(request{body: signTxBody(), signers: signers, idem: "rpc-" + w.ID}, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, out)
	}

	files := map[string][]byte{}
	for _, p := range []string{e.path, e.path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		files[p] = b
	}
	for i, id := range ws {
		var address string
		var sealedKey, sealedEntropy []byte
		if err := e.st.DB().QueryRowContext(e.ctx, `SELECT address, sealed_key, sealed_entropy FROM wallets WHERE id = ?`, id).
			Scan(&address, &sealedKey, &sealedEntropy); err != nil {
			t.Fatal(err)
		}
		aad := func(part string) []byte { return []byte("cachet/wallet/" + id + "/" + part) }
		priv, err := e.keys.Unseal(e.ctx, keys.PurposeWallet, sealedKey, aad("key"))
		if err != nil {
			t.Fatalf("unseal key of %s: %v", id, err)
		}
		entropy, err := e.keys.Unseal(e.ctx, keys.PurposeWallet, sealedEntropy, aad("entropy"))
		if err != nil {
			t.Fatalf("unseal entropy of %s: %v", id, err)
		}
		if len(priv) != 32 || len(entropy) != wallet.EntropySize {
			t.Fatalf("unsealed %d-byte key and %d-byte entropy", len(priv), len(entropy))
		}
		derived, addr, err := wallet.DeriveKey(entropy)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(derived, priv) || addr.Hex() != address {
			t.Fatalf("wallet %s: the sealed key is not m/44'/60'/0'/0/0 of the sealed entropy, or not of address %s", id, address)
		}
		mnemonic, err := wallet.Mnemonic(entropy)
		if err != nil {
			t.Fatal(err)
		}

		// Each blob is bound to its wallet and its part.
		for _, tc := range []struct {
			name string
			blob []byte
			aad  []byte
		}{
			{"key under the entropy's aad", sealedKey, aad("entropy")},
			{"entropy under the key's aad", sealedEntropy, aad("key")},
			{"key under another wallet's aad", sealedKey, []byte("cachet/wallet/" + ws[(i+1)%len(ws)] + "/key")},
		} {
			if _, err := e.keys.Unseal(e.ctx, keys.PurposeWallet, tc.blob, tc.aad); !errors.Is(err, keys.ErrAuthFailed) {
				t.Errorf("wallet %s: unseal %s = %v, want ErrAuthFailed", id, tc.name, err)
			}
		}

		needles := map[string][]byte{}
		for name, secret := range map[string][]byte{"private key": priv, "entropy": entropy} {
			needles[name+" bytes"] = secret
			needles[name+" hex"] = []byte(hex.EncodeToString(secret))
			needles[name+" HEX"] = []byte(strings.ToUpper(hex.EncodeToString(secret)))
			needles[name+" base64"] = []byte(base64.StdEncoding.EncodeToString(secret))
			needles[name+" base64 unpadded"] = []byte(base64.RawStdEncoding.EncodeToString(secret))
			needles[name+" base64url"] = []byte(base64.RawURLEncoding.EncodeToString(secret))
		}
		needles["mnemonic"] = []byte(mnemonic)
		for p, data := range files {
			for name, needle := range needles {
				if bytes.Contains(data, needle) {
					t.Errorf("%s holds wallet %s's %s", p, id, name)
				}
			}
		}
		for j, out := range outputs {
			for name, needle := range needles {
				if bytes.Contains(out, needle) {
					t.Errorf("response %d holds wallet %s's %s", j, id, name)
				}
			}
		}
		keys.Zero(priv)
		keys.Zero(entropy)
		keys.Zero(derived)

		// The scan reads the right files: a public value is there.
		found := false
		for _, data := range files {
			found = found || bytes.Contains(data, []byte(address))
		}
		if !found {
			t.Errorf("address %s of wallet %s is in neither database file: the scan looks at the wrong files", address, id)
		}
	}
}
