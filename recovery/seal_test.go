package recovery

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// fastKDF is the cheapest KDF Validate accepts, so that tests stay fast.
func fastKDF(t testing.TB) KDF {
	t.Helper()
	return KDF{
		Algorithm: KDFAlgorithm,
		Salt:      base64.StdEncoding.EncodeToString(randomBytes(t, MinKDFSalt)),
		Time:      MinKDFTime,
		MemoryKiB: MinKDFMemoryKiB,
		Threads:   MinKDFThreads,
	}
}

func testShare(t testing.TB, size int) Share {
	t.Helper()
	_, _, rec, err := Split(randomBytes(t, size))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestNewKDF checks that NewKDF returns what its doc comment promises: RFC
// 9106's second recommended option (t=3, p=4, m=64 MiB, 128-bit salt).
func TestNewKDF(t *testing.T) {
	k, err := NewKDF()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Validate(); err != nil {
		t.Fatalf("NewKDF does not validate: %v", err)
	}
	if k.Algorithm != "argon2id" || k.Time != 3 || k.MemoryKiB != 65536 || k.Threads != 4 {
		t.Errorf("NewKDF = %+v, want argon2id, time 3, memory 65536 KiB, threads 4", k)
	}
	salt, err := base64.StdEncoding.DecodeString(k.Salt)
	if err != nil || len(salt) != 16 {
		t.Errorf("NewKDF salt is %d bytes (err %v), want 16", len(salt), err)
	}
	k2, err := NewKDF()
	if err != nil {
		t.Fatal(err)
	}
	if k2.Salt == k.Salt {
		t.Error("two NewKDF calls returned the same salt")
	}
}

func TestKDFValidate(t *testing.T) {
	salt := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name string
		edit func(*KDF)
		want string // "" means valid
	}{
		{"fast params", func(*KDF) {}, ""},
		{"upper bounds", func(k *KDF) {
			k.Salt, k.Time, k.MemoryKiB, k.Threads = salt(MaxKDFSalt), MaxKDFTime, MaxKDFMemoryKiB, MaxKDFThreads
		}, ""},
		{"argon2i", func(k *KDF) { k.Algorithm = "argon2i" }, "recovery_kdf.algorithm: "},
		{"scrypt", func(k *KDF) { k.Algorithm = "scrypt" }, "recovery_kdf.algorithm: "},
		{"upper-case", func(k *KDF) { k.Algorithm = "Argon2id" }, "recovery_kdf.algorithm: "},
		{"empty algorithm", func(k *KDF) { k.Algorithm = "" }, "recovery_kdf.algorithm: "},
		{"salt not base64", func(k *KDF) { k.Salt = "not base64!" }, "recovery_kdf.salt: not standard base64"},
		{"salt url base64", func(k *KDF) { k.Salt = "____________________" }, "recovery_kdf.salt: not standard base64"},
		{"salt empty", func(k *KDF) { k.Salt = "" }, "recovery_kdf.salt: 0 bytes is below 16"},
		{"salt short", func(k *KDF) { k.Salt = salt(15) }, "recovery_kdf.salt: 15 bytes is below 16"},
		{"salt long", func(k *KDF) { k.Salt = salt(65) }, "recovery_kdf.salt: 65 bytes is above 64"},
		{"time 0", func(k *KDF) { k.Time = 0 }, "recovery_kdf.time: 0 is below 1"},
		{"time 11", func(k *KDF) { k.Time = 11 }, "recovery_kdf.time: 11 is above 10"},
		{"memory 1024", func(k *KDF) { k.MemoryKiB = 1024 }, "recovery_kdf.memory_kib: 1024 is below 19456"},
		{"memory 19455", func(k *KDF) { k.MemoryKiB = 19455 }, "recovery_kdf.memory_kib: 19455 is below 19456"},
		{"memory 2 GiB", func(k *KDF) { k.MemoryKiB = 2 << 20 }, "recovery_kdf.memory_kib: 2097152 is above 1048576"},
		{"threads 0", func(k *KDF) { k.Threads = 0 }, "recovery_kdf.threads: 0 is below 1"},
		{"threads 17", func(k *KDF) { k.Threads = 17 }, "recovery_kdf.threads: 17 is above 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fastKDF(t)
			tt.edit(&k)
			err := k.Validate()
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

func TestPasswordRoundTrip(t *testing.T) {
	for _, size := range []int{EntropySize, MaxEntropySize} {
		share := testShare(t, size)
		kdf := fastKDF(t)
		sealed, err := SealWithPassword(share, []byte("correct horse battery staple"), kdf, "wallet1")
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(share)+SealOverhead || sealed[0] != SealVersion {
			t.Fatalf("sealed share is %d bytes with version %d, want %d bytes with version %d", len(sealed), sealed[0], len(share)+SealOverhead, SealVersion)
		}
		if bytes.Contains(sealed, share[:len(share)-1]) {
			t.Fatal("sealed share holds the plaintext")
		}
		got, err := OpenWithPassword(sealed, []byte("correct horse battery staple"), kdf, "wallet1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, share) {
			t.Fatal("round trip changed the share")
		}
	}
}

func TestPasswordRefuses(t *testing.T) {
	share := testShare(t, EntropySize)
	kdf := fastKDF(t)
	password := []byte("correct horse battery staple")
	sealed, err := SealWithPassword(share, password, kdf, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	otherSalt := kdf
	otherSalt.Salt = fastKDF(t).Salt
	moreTime := kdf
	moreTime.Time = 2
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name     string
		sealed   []byte
		password []byte
		kdf      KDF
		walletID string
		want     error // nil: any error but ErrWrongSecret
	}{
		{"wrong password", sealed, []byte("correct horse battery stapler"), kdf, "wallet1", ErrWrongSecret},
		{"empty password", sealed, nil, kdf, "wallet1", ErrWrongSecret},
		{"other wallet id (AAD)", sealed, password, kdf, "wallet2", ErrWrongSecret},
		{"other KDF salt", sealed, password, otherSalt, "wallet1", ErrWrongSecret},
		{"other KDF time", sealed, password, moreTime, "wallet1", ErrWrongSecret},
		{"tampered nonce", flip(1), password, kdf, "wallet1", ErrWrongSecret},
		{"tampered ciphertext", flip(1 + 24), password, kdf, "wallet1", ErrWrongSecret},
		{"tampered tag", flip(len(sealed) - 1), password, kdf, "wallet1", ErrWrongSecret},
		{"truncated", sealed[:len(sealed)-1], password, kdf, "wallet1", ErrWrongSecret},
		{"extended", append(bytes.Clone(sealed), 0), password, kdf, "wallet1", ErrWrongSecret},
		{"empty", nil, password, kdf, "wallet1", ErrWrongSecret},
		{"unknown version", append([]byte{0x02}, sealed[1:]...), password, kdf, "wallet1", ErrUnknownVersion},
		{"version 0", append([]byte{0x00}, sealed[1:]...), password, kdf, "wallet1", ErrUnknownVersion},
		{"invalid KDF", sealed, password, KDF{Algorithm: "scrypt"}, "wallet1", nil},
		{"empty wallet id", sealed, password, kdf, "", nil},
		{"wallet id with a slash", sealed, password, kdf, "wallet1/x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenWithPassword(tt.sealed, tt.password, tt.kdf, tt.walletID)
			if err == nil {
				t.Fatalf("opened (%d bytes)", len(got))
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if tt.want == nil && errors.Is(err, ErrWrongSecret) {
				t.Errorf("error %v is ErrWrongSecret; want a usage error", err)
			}
		})
	}
}

// TestPasswordEveryByteAuthenticated flips each byte after the version and
// expects ErrWrongSecret every time.
func TestPasswordEveryByteAuthenticated(t *testing.T) {
	share := testShare(t, EntropySize)
	kdf := fastKDF(t)
	sealed, err := SealWithPassword(share, []byte("pw"), kdf, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	// One Argon2id run, then open directly with the key for every position.
	key, err := passwordKey([]byte("pw"), kdf)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(sealed); i++ {
		b := bytes.Clone(sealed)
		b[i] ^= 0x80
		if _, err := open(b, key, "wallet1", MethodPassword); !errors.Is(err, ErrWrongSecret) {
			t.Fatalf("byte %d flipped: error %v, want ErrWrongSecret", i, err)
		}
	}
	// The method is bound too: a password seal does not open as cloud.
	if _, err := open(sealed, key, "wallet1", MethodCloud); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("opened as cloud: error %v, want ErrWrongSecret", err)
	}
}

func TestSealWithPasswordRefuses(t *testing.T) {
	share := testShare(t, EntropySize)
	zeroIndex := bytes.Clone(share)
	zeroIndex[len(zeroIndex)-1] = 0
	tests := []struct {
		name     string
		share    Share
		password []byte
		kdf      KDF
		walletID string
		want     string
	}{
		{"empty password", share, nil, fastKDF(t), "w", "empty password"},
		{"invalid KDF", share, []byte("pw"), KDF{Algorithm: "argon2id", Salt: "AAAA"}, "w", "recovery_kdf.salt"},
		{"short share", share[:10], []byte("pw"), fastKDF(t), "w", "share"},
		{"long share", append(make(Share, 40), 1), []byte("pw"), fastKDF(t), "w", "share"},
		{"index 0", zeroIndex, []byte("pw"), fastKDF(t), "w", "never 0"},
		{"empty wallet id", share, []byte("pw"), fastKDF(t), "", "wallet id"},
		{"newline in wallet id", share, []byte("pw"), fastKDF(t), "w\nchallenge: x", "wallet id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SealWithPassword(tt.share, tt.password, tt.kdf, tt.walletID)
			if err == nil {
				t.Fatal("sealed")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestCloudRoundTrip(t *testing.T) {
	secret, err := NewCloudSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 32 {
		t.Fatalf("cloud secret is %d bytes, want 32", len(secret))
	}
	other, err := NewCloudSecret()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(secret, other) {
		t.Fatal("two cloud secrets are equal")
	}
	for _, size := range []int{EntropySize, MaxEntropySize} {
		share := testShare(t, size)
		sealed, err := SealWithSecret(share, secret, "wallet1")
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(share)+SealOverhead || sealed[0] != SealVersion {
			t.Fatalf("sealed share is %d bytes, version %d", len(sealed), sealed[0])
		}
		again, err := SealWithSecret(share, secret, "wallet1")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(again, sealed) {
			t.Fatal("two seals of one share are equal: the nonce is not fresh")
		}
		got, err := OpenWithSecret(sealed, secret, "wallet1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, share) {
			t.Fatal("round trip changed the share")
		}
	}
}

func TestCloudRefuses(t *testing.T) {
	secret, err := NewCloudSecret()
	if err != nil {
		t.Fatal(err)
	}
	share := testShare(t, EntropySize)
	sealed, err := SealWithSecret(share, secret, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	wrong := bytes.Clone(secret)
	wrong[31] ^= 1
	tampered := bytes.Clone(sealed)
	tampered[30] ^= 1
	tests := []struct {
		name     string
		sealed   []byte
		secret   []byte
		walletID string
		want     error // nil: any error but ErrWrongSecret
	}{
		{"wrong secret", sealed, wrong, "wallet1", ErrWrongSecret},
		{"other wallet id (AAD)", sealed, secret, "wallet2", ErrWrongSecret},
		{"tampered", tampered, secret, "wallet1", ErrWrongSecret},
		{"truncated", sealed[:SealOverhead], secret, "wallet1", ErrWrongSecret},
		{"unknown version", append([]byte{0x7f}, sealed[1:]...), secret, "wallet1", ErrUnknownVersion},
		{"secret 31 bytes", sealed, secret[:31], "wallet1", nil},
		{"secret 33 bytes", sealed, append(bytes.Clone(secret), 0), "wallet1", nil},
		{"no secret", sealed, nil, "wallet1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenWithSecret(tt.sealed, tt.secret, tt.walletID)
			if err == nil {
				t.Fatalf("opened (%d bytes)", len(got))
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if tt.want == nil && errors.Is(err, ErrWrongSecret) {
				t.Errorf("error %v is ErrWrongSecret; want a usage error", err)
			}
		})
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := SealWithSecret(share, make([]byte, n), "wallet1"); err == nil {
			t.Errorf("SealWithSecret accepted a %d-byte secret", n)
		}
	}
}

func TestRecoveryAAD(t *testing.T) {
	if got, want := string(RecoveryAAD("abc123", MethodPassword)), "cachet/v1/embedded/abc123/recovery/password"; got != want {
		t.Errorf("RecoveryAAD = %q, want %q", got, want)
	}
	if got, want := string(RecoveryAAD("abc123", MethodCloud)), "cachet/v1/embedded/abc123/recovery/cloud"; got != want {
		t.Errorf("RecoveryAAD = %q, want %q", got, want)
	}
}

// TestErrorsHoldNoSecret checks that errors never carry the password or the
// share.
func TestErrorsHoldNoSecret(t *testing.T) {
	share := testShare(t, EntropySize)
	password := "hunter2-very-secret"
	kdf := fastKDF(t)
	sealed, err := SealWithPassword(share, []byte(password), kdf, "wallet1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenWithPassword(sealed, []byte(password+"x"), kdf, "wallet1")
	if err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("error %v", err)
	}
	// A share sealed authentically that is not a share.
	key, err := secretKey(make([]byte, CloudSecretSize))
	if err != nil {
		t.Fatal(err)
	}
	bad := make(Share, 17) // index 0
	copy(bad, "0123456789abcdef")
	aeadSealed := sealRaw(t, bad, key, "wallet1", MethodCloud)
	_, err = OpenWithSecret(aeadSealed, make([]byte, CloudSecretSize), "wallet1")
	if err == nil || errors.Is(err, ErrWrongSecret) || strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("error %v", err)
	}
}

// sealRaw seals arbitrary bytes in the sealed-share format, without the
// share check seal makes, to test what open does with an authentic
// non-share.
func sealRaw(t testing.TB, plain, key []byte, walletID, method string) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce := randomBytes(t, chacha20poly1305.NonceSizeX)
	out := append([]byte{SealVersion}, nonce...)
	return aead.Seal(out, nonce, plain, RecoveryAAD(walletID, method))
}
