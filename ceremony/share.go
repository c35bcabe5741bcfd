package ceremony

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// A share is one operator's part of the root secret. Its text form is one
// line that an operator can also type at a prompt:
//
//	cachet-share-v1:<fingerprint>:g<generation>:<m>of<n>:<index>:<data>:<checksum>
//
// fingerprint is the root's public fingerprint (32 hex digits), index the
// operator's number (1..n), data the Shamir share (base32, no padding; the
// last byte is its x coordinate), and checksum the first 4 bytes of SHA-256
// over everything before it, in hex. Whitespace is ignored when parsing, and
// letters may be in either case, so a share read aloud or typed in groups
// still parses; a typo fails the checksum.
const sharePrefix = "cachet-share-v1"

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Share is one parsed share.
type Share struct {
	Fingerprint string
	Generation  uint32
	Threshold   int
	Count       int
	Index       int
	Data        []byte // secret: zero it with Wipe
}

// Wipe zeroes the share's secret part.
func (s *Share) Wipe() { clear(s.Data) }

func (s *Share) body() string {
	return fmt.Sprintf("%s:%s:g%d:%dof%d:%d:%s", sharePrefix, s.Fingerprint, s.Generation, s.Threshold, s.Count, s.Index, strings.ToLower(b32.EncodeToString(s.Data)))
}

func checksum(body string) string {
	sum := sha256.Sum256([]byte(body))
	return hex.EncodeToString(sum[:4])
}

// Text returns the share's one-line text form.
func (s *Share) Text() string {
	b := s.body()
	return b + ":" + checksum(b)
}

// ErrShareCorrupt means a share's text does not parse or fails its checksum.
var ErrShareCorrupt = errors.New("share is corrupted or mistyped")

// ParseShare parses the text form of a share.
func ParseShare(text string) (Share, error) {
	t := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, text)
	fields := strings.Split(t, ":")
	if len(fields) != 7 || fields[0] != sharePrefix {
		return Share{}, fmt.Errorf("%w: not a %s line", ErrShareCorrupt, sharePrefix)
	}
	body := strings.Join(fields[:6], ":")
	if checksum(body) != fields[6] {
		return Share{}, fmt.Errorf("%w: checksum mismatch", ErrShareCorrupt)
	}
	var s Share
	s.Fingerprint = fields[1]
	if b, err := hex.DecodeString(s.Fingerprint); err != nil || len(b) != 16 {
		return Share{}, fmt.Errorf("%w: bad fingerprint", ErrShareCorrupt)
	}
	g, err := strconv.ParseUint(strings.TrimPrefix(fields[2], "g"), 10, 32)
	if err != nil || !strings.HasPrefix(fields[2], "g") || g == 0 {
		return Share{}, fmt.Errorf("%w: bad generation", ErrShareCorrupt)
	}
	s.Generation = uint32(g)
	m, n, ok := strings.Cut(fields[3], "of")
	if s.Threshold, err = strconv.Atoi(m); !ok || err != nil {
		return Share{}, fmt.Errorf("%w: bad threshold", ErrShareCorrupt)
	}
	if s.Count, err = strconv.Atoi(n); err != nil || s.Threshold < 2 || s.Count < s.Threshold || s.Count > 255 {
		return Share{}, fmt.Errorf("%w: bad share count", ErrShareCorrupt)
	}
	if s.Index, err = strconv.Atoi(fields[4]); err != nil || s.Index < 1 || s.Index > s.Count {
		return Share{}, fmt.Errorf("%w: bad share index", ErrShareCorrupt)
	}
	if s.Data, err = b32.DecodeString(strings.ToUpper(fields[5])); err != nil || len(s.Data) != 33 {
		return Share{}, fmt.Errorf("%w: bad share data", ErrShareCorrupt)
	}
	return s, nil
}

// EncryptShare writes the share's text, age-encrypted to recipient and
// ASCII-armored, to w.
func EncryptShare(w io.Writer, s *Share, recipient age.Recipient) error {
	aw := armor.NewWriter(w)
	ew, err := age.Encrypt(aw, recipient)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(ew, s.Text()+"\n"); err != nil {
		return err
	}
	if err := ew.Close(); err != nil {
		return err
	}
	return aw.Close()
}

// ErrNoIdentity means none of the identities given can decrypt a share file:
// the file was made for another operator, or is not a share file.
var ErrNoIdentity = errors.New("none of the given identities can decrypt this share (another operator's share, or the wrong identity file?)")

// DecryptShare reads an age-encrypted share (armored or binary) with the
// given identities and parses it.
func DecryptShare(r io.Reader, ids []age.Identity) (Share, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return Share{}, err
	}
	var src io.Reader = bytes.NewReader(data)
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header)) {
		src = armor.NewReader(bytes.NewReader(data))
	}
	dr, err := age.Decrypt(src, ids...)
	if err != nil {
		var nim *age.NoIdentityMatchError
		if errors.As(err, &nim) {
			return Share{}, ErrNoIdentity
		}
		return Share{}, fmt.Errorf("%w: not an age file: %v", ErrShareCorrupt, err)
	}
	text, err := io.ReadAll(io.LimitReader(dr, 4096))
	if err != nil {
		return Share{}, fmt.Errorf("%w: %v", ErrShareCorrupt, err)
	}
	defer clear(text)
	return ParseShare(string(text))
}

// ReadIdentityFile reads age identities (one per line, # comments) from a
// file that only its owner may read.
func ReadIdentityFile(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

// ParseRecipient parses an operator's public key: an age recipient string
// ("age1...") or the path of a file holding one.
func ParseRecipient(s string) (age.Recipient, string, error) {
	text := strings.TrimSpace(s)
	if !strings.HasPrefix(text, "age1") {
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, "", fmt.Errorf("operator key %q: not an age recipient, and not a readable file: %w", s, err)
		}
		text = strings.TrimSpace(string(b))
	}
	rs, err := age.ParseRecipients(strings.NewReader(text))
	if err != nil {
		return nil, "", fmt.Errorf("operator key %q: %w", s, err)
	}
	if len(rs) != 1 {
		return nil, "", fmt.Errorf("operator key %q: holds %d recipients, want exactly 1", s, len(rs))
	}
	for _, line := range strings.Split(text, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return rs[0], l, nil
		}
	}
	return rs[0], "", nil
}
