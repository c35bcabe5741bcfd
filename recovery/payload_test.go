package recovery

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/crypto"
)

func TestValidMethod(t *testing.T) {
	for _, m := range []string{"automatic", "password", "cloud"} {
		if !ValidMethod(m) {
			t.Errorf("ValidMethod(%q) = false", m)
		}
	}
	for _, m := range []string{"", "Automatic", "passkey", "cloud "} {
		if ValidMethod(m) {
			t.Errorf("ValidMethod(%q) = true", m)
		}
	}
}

// The challenge digest is EIP-712's, computed here from the specification's
// formulas with Keccak-256 alone: hashStruct of the message under the
// domain separator, after 0x19 0x01.
func TestChallengeDigest(t *testing.T) {
	digest := sha256.Sum256([]byte("payload"))
	got, err := ChallengeDigest("clx0abcdefghijklmnopqrst", "00112233445566778899aabbccddeeff", digest)
	if err != nil {
		t.Fatal(err)
	}
	k := func(parts ...[]byte) []byte { return crypto.Keccak256(parts...) }
	domain := k(k([]byte("EIP712Domain(string name,string version)")), k([]byte("Cachet embedded wallet recovery")), k([]byte("1")))
	msg := k(k([]byte("RecoveryChange(string wallet,string challenge,bytes32 payloadSha256)")),
		k([]byte("clx0abcdefghijklmnopqrst")), k([]byte("00112233445566778899aabbccddeeff")), digest[:])
	want := k([]byte{0x19, 0x01}, domain, msg)
	if !bytes.Equal(got, want) {
		t.Fatalf("ChallengeDigest = %x, want %x", got, want)
	}
	for name, d := range map[string]func() ([]byte, error){
		"digest": func() ([]byte, error) {
			o := digest
			o[31] ^= 1
			return ChallengeDigest("clx0abcdefghijklmnopqrst", "00112233445566778899aabbccddeeff", o)
		},
		"challenge": func() ([]byte, error) { return ChallengeDigest("clx0abcdefghijklmnopqrst", "ff", digest) },
		"wallet": func() ([]byte, error) {
			return ChallengeDigest("clx0other", "00112233445566778899aabbccddeeff", digest)
		},
	} {
		if o, _ := d(); bytes.Equal(o, got) {
			t.Errorf("another %s gives the same digest", name)
		}
	}
	// No personal_sign message hashes to it: EIP-191 version 0x45 and
	// EIP-712 (0x19 0x01) never share a preimage prefix.
	if bytes.Equal(accounts.TextHash(got), got) {
		t.Fatal("impossible")
	}
}

func TestPayloadValidate(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	share := b64(append(make([]byte, 16), 7))
	share32 := b64(append(make([]byte, 32), 200))
	sealed := func(n int) string {
		b := make([]byte, n)
		b[0] = SealVersion
		return b64(b)
	}
	minSealed := SealOverhead + EntropySize + 1
	okKDF := fastKDF(t)
	badKDF := okKDF
	badKDF.MemoryKiB = 1024
	tests := []struct {
		name string
		p    Payload
		want string // "" means valid; else the error's prefix
	}{
		{"automatic", Payload{Method: MethodAutomatic, RecoveryShare: share}, ""},
		{"automatic 32-byte entropy", Payload{Method: MethodAutomatic, RecoveryShare: share32}, ""},
		{"password", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(minSealed), KDF: &okKDF}, ""},
		{"password max size", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(MaxSealedShare), KDF: &okKDF}, ""},
		{"cloud", Payload{Method: MethodCloud, EncryptedRecoveryShare: sealed(74)}, ""},

		{"no method", Payload{RecoveryShare: share}, "method: "},
		{"unknown method", Payload{Method: "passkey", RecoveryShare: share}, "method: "},

		{"automatic without share", Payload{Method: MethodAutomatic}, "recovery_share: required"},
		{"automatic with sealed share", Payload{Method: MethodAutomatic, RecoveryShare: share, EncryptedRecoveryShare: sealed(minSealed)}, "encrypted_recovery_share: not allowed"},
		{"automatic with KDF", Payload{Method: MethodAutomatic, RecoveryShare: share, KDF: &okKDF}, "recovery_kdf: not allowed"},
		{"automatic bad base64", Payload{Method: MethodAutomatic, RecoveryShare: "AAAA!AAA"}, "recovery_share: not standard base64"},
		{"automatic url base64", Payload{Method: MethodAutomatic, RecoveryShare: strings.Repeat("_", 24)}, "recovery_share: not standard base64"},
		{"automatic short share", Payload{Method: MethodAutomatic, RecoveryShare: b64(append(make([]byte, 15), 7))}, "recovery_share: 16 bytes"},
		{"automatic long share", Payload{Method: MethodAutomatic, RecoveryShare: b64(append(make([]byte, 33), 7))}, "recovery_share: 34 bytes"},
		{"automatic huge share", Payload{Method: MethodAutomatic, RecoveryShare: b64(make([]byte, 4096))}, "recovery_share: longer"},
		{"automatic index 0", Payload{Method: MethodAutomatic, RecoveryShare: b64(make([]byte, 17))}, "recovery_share: index"},

		{"password without KDF", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(minSealed)}, "recovery_kdf: required"},
		{"password bad KDF", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(minSealed), KDF: &badKDF}, "recovery_kdf.memory_kib: 1024 is below 19456"},
		{"password without sealed share", Payload{Method: MethodPassword, KDF: &okKDF}, "encrypted_recovery_share: required"},
		{"password with plaintext share", Payload{Method: MethodPassword, RecoveryShare: share, EncryptedRecoveryShare: sealed(minSealed), KDF: &okKDF}, "recovery_share: not allowed"},
		{"password oversize", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(MaxSealedShare + 1), KDF: &okKDF}, "encrypted_recovery_share: 257 bytes is above 256"},
		{"password huge", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(1 << 16), KDF: &okKDF}, "encrypted_recovery_share: longer"},
		{"password too small", Payload{Method: MethodPassword, EncryptedRecoveryShare: sealed(minSealed - 1), KDF: &okKDF}, "encrypted_recovery_share: 57 bytes is below 58"},
		{"password bad base64", Payload{Method: MethodPassword, EncryptedRecoveryShare: "%%%", KDF: &okKDF}, "encrypted_recovery_share: not standard base64"},

		{"cloud with KDF", Payload{Method: MethodCloud, EncryptedRecoveryShare: sealed(minSealed), KDF: &okKDF}, "recovery_kdf: not allowed"},
		{"cloud without sealed share", Payload{Method: MethodCloud}, "encrypted_recovery_share: required"},
		{"cloud with plaintext share", Payload{Method: MethodCloud, RecoveryShare: share}, "recovery_share: not allowed"},
		{"cloud unknown version", Payload{Method: MethodCloud, EncryptedRecoveryShare: b64(make([]byte, minSealed))}, "encrypted_recovery_share: version 0"},
		{"cloud bad base64", Payload{Method: MethodCloud, EncryptedRecoveryShare: "not base64"}, "encrypted_recovery_share: not standard base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatal("accepted")
			case tt.want != "" && !strings.HasPrefix(err.Error(), tt.want):
				t.Errorf("error %q does not start with %q", err, tt.want)
			}
		})
	}
}

// TestPayloadRealSeals validates payloads built the way a device builds them.
func TestPayloadRealSeals(t *testing.T) {
	_, _, rec, err := Split(randomBytes(t, EntropySize))
	if err != nil {
		t.Fatal(err)
	}
	kdf := fastKDF(t)
	pw, err := SealWithPassword(rec, []byte("pw"), kdf, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := NewCloudSecret()
	if err != nil {
		t.Fatal(err)
	}
	cloud, err := SealWithSecret(rec, secret, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, p := range []Payload{
		{Method: MethodAutomatic, RecoveryShare: b64(rec)},
		{Method: MethodPassword, EncryptedRecoveryShare: b64(pw), KDF: &kdf},
		{Method: MethodCloud, EncryptedRecoveryShare: b64(cloud)},
	} {
		// Through JSON, as on the wire.
		j, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var q Payload
		if err := json.Unmarshal(j, &q); err != nil {
			t.Fatal(err)
		}
		if err := q.Validate(); err != nil {
			t.Errorf("%s: %v (json %s)", p.Method, err, j)
		}
	}
}

// TestPayloadJSONNames pins the wire field names.
func TestPayloadJSONNames(t *testing.T) {
	kdf := KDF{Algorithm: "argon2id", Salt: "c2FsdA==", Time: 1, MemoryKiB: 19456, Threads: 1}
	j, err := json.Marshal(Payload{Method: "password", EncryptedRecoveryShare: "AQ==", KDF: &kdf})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"method":"password","encrypted_recovery_share":"AQ==","recovery_kdf":{"algorithm":"argon2id","salt":"c2FsdA==","time":1,"memory_kib":19456,"threads":1}}`
	if string(j) != want {
		t.Errorf("json = %s\nwant   %s", j, want)
	}
	j, err = json.Marshal(Payload{Method: "automatic", RecoveryShare: "AQ=="})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"method":"automatic","recovery_share":"AQ=="}`; string(j) != want {
		t.Errorf("json = %s\nwant   %s", j, want)
	}
}
