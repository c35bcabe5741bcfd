package recovery

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/internal/shamir"
)

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSplitCombineEveryPair(t *testing.T) {
	for _, size := range []int{EntropySize, 20, 24, 28, MaxEntropySize} {
		entropy := randomBytes(t, size)
		device, auth, rec, err := Split(entropy)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		shares := map[string]Share{"device": device, "auth": auth, "recovery": rec}
		seen := map[byte]string{}
		for name, s := range shares {
			if err := s.Valid(size); err != nil {
				t.Errorf("%d bytes: %s share: %v", size, name, err)
			}
			if len(s) != size+1 {
				t.Errorf("%d bytes: %s share is %d bytes", size, name, len(s))
			}
			if s.Index() == 0 {
				t.Errorf("%d bytes: %s share has index 0", size, name)
			}
			if other, dup := seen[s.Index()]; dup {
				t.Errorf("%d bytes: %s and %s share index %d", size, name, other, s.Index())
			}
			seen[s.Index()] = name
		}
		pairs := []struct {
			name string
			a, b Share
		}{
			{"device+auth", device, auth},
			{"auth+device", auth, device},
			{"device+recovery", device, rec},
			{"recovery+device", rec, device},
			{"auth+recovery", auth, rec},
			{"recovery+auth", rec, auth},
		}
		for _, p := range pairs {
			got, err := Combine(p.a, p.b)
			if err != nil {
				t.Errorf("%d bytes: %s: %v", size, p.name, err)
				continue
			}
			if !bytes.Equal(got, entropy) {
				t.Errorf("%d bytes: %s combines to a different secret", size, p.name)
			}
		}
	}
}

func TestSplitRefusesEntropySize(t *testing.T) {
	for _, size := range []int{0, 1, EntropySize - 1, MaxEntropySize + 1, 64} {
		if _, _, _, err := Split(make([]byte, size)); err == nil {
			t.Errorf("Split accepted %d bytes of entropy", size)
		}
	}
}

func TestCombineRefuses(t *testing.T) {
	device, auth, _, err := Split(randomBytes(t, EntropySize))
	if err != nil {
		t.Fatal(err)
	}
	zeroIndex := append(Share(nil), auth...)
	zeroIndex[len(zeroIndex)-1] = 0
	_, long, _, err := Split(randomBytes(t, MaxEntropySize))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		a, b Share
		want string
	}{
		{"same share twice", device, device, "index"},
		{"same index", device, append(Share(randomBytes(t, EntropySize)), device.Index()), "index"},
		{"different lengths", device, long, "different lengths"},
		{"one-byte share", Share{device.Index()}, Share{auth.Index()}, "at least 2 bytes"},
		{"one-byte second share", device, Share{auth.Index()}, "at least 2 bytes"},
		{"empty share", device, nil, "at least 2 bytes"},
		{"index 0", device, zeroIndex, "never 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Combine(tt.a, tt.b)
			if err == nil {
				t.Fatalf("Combine accepted it and returned %d bytes", len(got))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestShareValid(t *testing.T) {
	tests := []struct {
		name      string
		s         Share
		secretLen int
		ok        bool
	}{
		{"17 bytes for 16", append(make(Share, 16), 7), 16, true},
		{"33 bytes for 32", append(make(Share, 32), 255), 32, true},
		{"too short", append(make(Share, 15), 7), 16, false},
		{"too long", append(make(Share, 17), 7), 16, false},
		{"index 0", make(Share, 17), 16, false},
		{"empty", nil, 16, false},
		{"secret length 0", Share{1}, 0, false},
	}
	for _, tt := range tests {
		if err := tt.s.Valid(tt.secretLen); (err == nil) != tt.ok {
			t.Errorf("%s: Valid(%d) = %v, want ok=%v", tt.name, tt.secretLen, err, tt.ok)
		}
	}
	if got := Share(nil).Index(); got != 0 {
		t.Errorf("empty share Index() = %d, want 0", got)
	}
}

// TestShareAtMatchesVault checks the Lagrange evaluation against vault's
// own shares: from any two shares of a 2-of-3 split, the third, computed at
// its index, must be vault's third share byte for byte.
func TestShareAtMatchesVault(t *testing.T) {
	orderings := [][3]int{{0, 1, 2}, {0, 2, 1}, {1, 2, 0}}
	for i := 0; i < 500; i++ {
		size := EntropySize + i%(MaxEntropySize-EntropySize+1)
		secret := randomBytes(t, size)
		var shares [][]byte
		if i%2 == 0 {
			var err error
			if shares, err = shamir.Split(secret, 3, 2); err != nil {
				t.Fatal(err)
			}
		} else {
			d, a, r, err := Split(secret)
			if err != nil {
				t.Fatal(err)
			}
			shares = [][]byte{d, a, r}
		}
		for _, o := range orderings {
			for _, swap := range []bool{false, true} {
				a, b, want := Share(shares[o[0]]), Share(shares[o[1]]), Share(shares[o[2]])
				if swap {
					a, b = b, a
				}
				got, err := ShareAt(a, b, want.Index())
				if err != nil {
					t.Fatalf("split %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("split %d, from shares %d,%d: ShareAt(x=%d) differs from vault's share", i, o[0], o[1], want.Index())
				}
			}
		}
		a, b := Share(shares[0]), Share(shares[1])
		if got, err := ShareAt(a, b, a.Index()); err != nil || !bytes.Equal(got, a) {
			t.Fatalf("split %d: ShareAt(a, b, a.Index()) is not a (err %v)", i, err)
		}
		if got, err := ShareAt(a, b, b.Index()); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("split %d: ShareAt(a, b, b.Index()) is not b (err %v)", i, err)
		}
	}
}

// TestShareAtFiveParts covers more x values: with a 5-part threshold-2 split
// every share lies on the line through any two others.
func TestShareAtFiveParts(t *testing.T) {
	for i := 0; i < 100; i++ {
		secret := randomBytes(t, EntropySize)
		shares, err := shamir.Split(secret, 5, 2)
		if err != nil {
			t.Fatal(err)
		}
		for ai := range shares {
			for bi := range shares {
				if ai == bi {
					continue
				}
				for _, want := range shares {
					got, err := ShareAt(shares[ai], shares[bi], Share(want).Index())
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("split %d: share at x=%d from %d,%d differs from vault's", i, Share(want).Index(), ai, bi)
					}
				}
			}
		}
		// A share derived at a fresh index is a share like any other.
		used := map[byte]bool{}
		for _, s := range shares {
			used[Share(s).Index()] = true
		}
		for x := 1; x < 256; x++ {
			if used[byte(x)] {
				continue
			}
			fresh, err := ShareAt(shares[0], shares[1], byte(x))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Combine(fresh, shares[4])
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("split %d: share derived at x=%d does not combine to the secret (err %v)", i, x, err)
			}
			break
		}
	}
}

func TestShareAtRefuses(t *testing.T) {
	device, auth, _, err := Split(randomBytes(t, EntropySize))
	if err != nil {
		t.Fatal(err)
	}
	_, long, _, err := Split(randomBytes(t, MaxEntropySize))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		a, b Share
		x    byte
		want string
	}{
		{"x = 0 is the secret", device, auth, 0, "secret"},
		{"same index", device, device, 9, "index"},
		{"different lengths", device, long, 9, "different lengths"},
		{"one-byte shares", Share{1}, Share{2}, 9, "at least 2 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ShareAt(tt.a, tt.b, tt.x); err == nil {
				t.Fatal("ShareAt accepted it")
			} else if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestGFArithmetic checks the field against published AES facts.
func TestGFArithmetic(t *testing.T) {
	muls := []struct{ a, b, want byte }{
		{0x57, 0x83, 0xc1}, // FIPS-197 section 4.2
		{0x57, 0x13, 0xfe}, // FIPS-197 section 4.2.1
		{0x57, 0x02, 0xae}, // FIPS-197 section 4.2.1, xtime
		{0x57, 0x04, 0x47},
		{0x57, 0x08, 0x8e},
		{0x57, 0x10, 0x07},
		{0x53, 0xca, 0x01}, // {53} and {ca} are inverses (FIPS-197 section 4.2)
		{0x00, 0xff, 0x00},
		{0x01, 0xab, 0xab},
	}
	for _, m := range muls {
		if got := gfMul(m.a, m.b); got != m.want {
			t.Errorf("{%02x}•{%02x} = {%02x}, want {%02x}", m.a, m.b, got, m.want)
		}
		if got := gfMul(m.b, m.a); got != m.want {
			t.Errorf("{%02x}•{%02x} = {%02x}, want {%02x}", m.b, m.a, got, m.want)
		}
	}
	invs := []struct{ a, want byte }{
		{0x53, 0xca}, // FIPS-197 section 4.2
		{0xca, 0x53},
		{0x01, 0x01},
		{0x00, 0x00}, // by convention, as in the S-box
	}
	for _, v := range invs {
		if got := gfInv(v.a); got != v.want {
			t.Errorf("inverse of {%02x} = {%02x}, want {%02x}", v.a, got, v.want)
		}
	}
	for a := 1; a < 256; a++ {
		if got := gfMul(byte(a), gfInv(byte(a))); got != 1 {
			t.Fatalf("{%02x}•{%02x}^-1 = {%02x}, want {01}", a, a, got)
		}
	}
	// {03} generates the multiplicative group: its powers cover all 255
	// non-zero elements before returning to {01}.
	seen := map[byte]bool{}
	p := byte(1)
	for i := 0; i < 255; i++ {
		if seen[p] {
			t.Fatalf("{03}^%d = {%02x} repeats early", i, p)
		}
		seen[p] = true
		p = gfMul(p, 0x03)
	}
	if p != 1 {
		t.Errorf("{03}^255 = {%02x}, want {01}", p)
	}
}
