package ceremony

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/cachet-custody/cachet/internal/shamir"

	"github.com/cachet-custody/cachet/keys"
)

func testShares(t *testing.T, n, m int) ([]byte, []NamedShare) {
	t.Helper()
	root := make([]byte, 32)
	rand.Read(root)
	fp, _ := keys.Fingerprint(root)
	parts, err := split(root, n, m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]NamedShare, n)
	for i, p := range parts {
		out[i] = NamedShare{Name: "s" + string(rune('1'+i)), Share: Share{Fingerprint: fp, Generation: 1, Threshold: m, Count: n, Index: i + 1, Data: p}}
	}
	return root, out
}

func TestShareTextRoundTrip(t *testing.T) {
	_, ss := testShares(t, 3, 2)
	s := ss[1].Share
	text := s.Text()
	got, err := ParseShare(text)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint != s.Fingerprint || got.Index != 2 || got.Threshold != 2 || got.Count != 3 || !bytes.Equal(got.Data, s.Data) {
		t.Fatalf("round trip changed the share: %+v", got)
	}
	// Typed in groups, upper case, with a trailing newline: still the same.
	spaced := strings.ToUpper(text[:20]) + "  " + text[20:40] + "\n " + text[40:] + "\n"
	if got, err := ParseShare(spaced); err != nil || !bytes.Equal(got.Data, s.Data) {
		t.Fatalf("spaced share: %v", err)
	}
}

func TestShareCorruptionDetected(t *testing.T) {
	_, ss := testShares(t, 3, 2)
	text := ss[0].Share.Text()
	dataStart := strings.LastIndex(text[:strings.LastIndexByte(text, ':')], ":") + 1
	for name, bad := range map[string]string{
		"one character of data changed": text[:dataStart] + flip(text[dataStart]) + text[dataStart+1:],
		"index changed":                 strings.Replace(text, ":2of3:1:", ":2of3:2:", 1),
		"threshold changed":             strings.Replace(text, ":2of3:", ":1of3:", 1),
		"checksum changed":              text[:len(text)-1] + flip(text[len(text)-1]),
		"truncated":                     text[:len(text)-10],
		"not a share":                   "hello",
		"empty":                         "",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseShare(bad); !errors.Is(err, ErrShareCorrupt) {
				t.Fatalf("ParseShare(%q) = %v, want ErrShareCorrupt", bad, err)
			}
		})
	}
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	if c >= '0' && c <= '9' {
		return string(rune('0' + (c-'0'+1)%10))
	}
	return "a"
}

func TestCheckShares(t *testing.T) {
	_, ss := testShares(t, 3, 2)
	_, other := testShares(t, 3, 2)
	tests := []struct {
		name     string
		shares   []NamedShare
		storeFP  string
		wantName string // the share named in the *ShareError; "" = a count error; "-" = success
	}{
		{"two distinct shares", []NamedShare{ss[0], ss[2]}, "", "-"},
		{"three shares", ss, ss[0].Share.Fingerprint, "-"},
		{"one share alone", ss[:1], "", ""},
		{"duplicated share", []NamedShare{ss[1], {Name: "copy", Share: ss[1].Share}}, "", "copy"},
		{"share of another ceremony", []NamedShare{ss[0], other[1]}, "", other[1].Name},
		{"shares of another appliance", []NamedShare{other[0], other[1]}, ss[0].Share.Fingerprint, other[0].Name},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckShares(tc.shares, tc.storeFP)
			var se *ShareError
			switch tc.wantName {
			case "-":
				if err != nil {
					t.Fatal(err)
				}
			case "":
				if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "needs 2 of 3") {
					t.Fatalf("err = %v, want a too-few-shares error", err)
				}
			default:
				if !errors.As(err, &se) || se.Name != tc.wantName {
					t.Fatalf("err = %v, want a ShareError naming %s", err, tc.wantName)
				}
			}
		})
	}
}

func TestShareFileEncryption(t *testing.T) {
	_, ss := testShares(t, 3, 2)
	id, _ := age.GenerateX25519Identity()
	wrong, _ := age.GenerateX25519Identity()
	var buf bytes.Buffer
	if err := EncryptShare(&buf, &ss[0].Share, id.Recipient()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatalf("share file is not armored: %q", buf.String()[:40])
	}
	if strings.Contains(buf.String(), ss[0].Share.Fingerprint) {
		t.Fatal("share file shows its contents")
	}
	got, err := DecryptShare(bytes.NewReader(buf.Bytes()), []age.Identity{wrong, id})
	if err != nil || !bytes.Equal(got.Data, ss[0].Share.Data) {
		t.Fatalf("decrypt = %v", err)
	}
	if _, err := DecryptShare(bytes.NewReader(buf.Bytes()), []age.Identity{wrong}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("wrong identity: %v, want ErrNoIdentity", err)
	}
	// A corrupted file fails authentication, not with garbage.
	b := bytes.Clone(buf.Bytes())
	b[len(b)/2] ^= 0x01
	if _, err := DecryptShare(bytes.NewReader(b), []age.Identity{id}); err == nil {
		t.Fatal("a corrupted share file decrypted")
	}
}

func TestSplitCombineAnyM(t *testing.T) {
	root, ss := testShares(t, 5, 3)
	// Every 3-subset of the 5 shares gives the root back; 2 shares do not.
	for a := 0; a < 5; a++ {
		for b := a + 1; b < 5; b++ {
			two, err := shamir.Combine([][]byte{ss[a].Share.Data, ss[b].Share.Data})
			if err != nil || bytes.Equal(two, root) {
				t.Fatalf("shares %d,%d alone gave the root (err %v)", a+1, b+1, err)
			}
			for c := b + 1; c < 5; c++ {
				got, err := shamir.Combine([][]byte{ss[a].Share.Data, ss[b].Share.Data, ss[c].Share.Data})
				if err != nil || !bytes.Equal(got, root) {
					t.Fatalf("shares %d,%d,%d: %v", a+1, b+1, c+1, err)
				}
			}
		}
	}
}
