// Package authkeys owns the appliance's own authorization keys: P-256 keys
// that a local server or bot uses, over the socket, as its member of a key
// quorum or as an additional signer, without the key ever leaving the
// hardware. In a hosted service that key sits in the customer's server,
// where a compromised host can copy it; here the server asks Cachet to sign
// each request, and Cachet decides whether that caller may use that key for
// that request.
//
// A key's material is derived from the root under the label "auth/<id>"
// (keys.AuthKeyPrefix): inside the HSM, or in the TPM backend's locked
// memory. Nothing of it is stored; restoring the root onto new hardware
// brings every key back with the same public key.
//
// For each signature the package checks, in order: the key exists and is
// not deleted; the caller's uid or a group is an allowed caller; the request
// is one the key may sign (method and path pattern) and is for this app and
// this appliance's public URL; the key's rate limit. It then builds the
// canonical payload exactly as the daemon's verifier does (quorum.Payload),
// signs its SHA-256 in the hardware, and releases the signature only after
// the audit record (caller, method, path, body digest) and last_used_at are
// committed.
package authkeys

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/internal/apierr"
	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

// Kind classifies an error for the HTTP edge (package apierr).
type Kind = apierr.Kind

// Error kinds.
const (
	Invalid     = apierr.Invalid         // 400 invalid_data
	Forbidden   = apierr.Forbidden       // 403 forbidden
	NotFound    = apierr.NotFound        // 404 not_found
	RateLimited = apierr.TooManyRequests // 429 too_many_requests
)

// Error is a refusal the caller may see.
type Error = apierr.Error

func errorf(k Kind, format string, args ...any) *Error { return apierr.Errorf(k, format, args...) }

// Caller is the local process asking, as the kernel reported it.
type Caller struct {
	UID    uint32
	GID    uint32
	Groups []uint32
	// Actor is the audit log's name for the caller and its app.
	Actor string
}

// Callers are the local users and groups that may use a key.
type Callers struct {
	UIDs []uint32 `json:"uids"`
	GIDs []uint32 `json:"gids"`
}

func (c Callers) allow(p Caller) bool {
	if slices.Contains(c.UIDs, p.UID) || slices.Contains(c.GIDs, p.GID) {
		return true
	}
	for _, g := range p.Groups {
		if slices.Contains(c.GIDs, g) {
			return true
		}
	}
	return false
}

// Key is an authorization key as the API shows it.
type Key struct {
	ID              string   `json:"id"`
	DisplayName     *string  `json:"display_name"`
	PublicKey       string   `json:"public_key"`
	AllowedCallers  Callers  `json:"allowed_callers"`
	AllowedRequests []string `json:"allowed_requests"`
	CreatedAt       int64    `json:"created_at"`
	LastUsedAt      *int64   `json:"last_used_at"`
	DeletedAt       *int64   `json:"deleted_at"`
}

// CreateInput is the body of POST /v1/authorization_keys.
type CreateInput struct {
	DisplayName     *string  `json:"display_name"`
	AllowedCallers  *Callers `json:"allowed_callers"`
	AllowedRequests []string `json:"allowed_requests"`
}

// SignInput is the body of POST /v1/authorization_keys/{id}/sign: the
// request the caller is about to send. Body is its JSON body (an object,
// or "" or absent for none), Headers its privy-* headers.
type SignInput struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Body    json.RawMessage   `json:"body"`
	Headers map[string]string `json:"headers"`
}

// Options configures the service.
type Options struct {
	// PublicBase is the daemon's public URL: a signed request must be for
	// it.
	PublicBase string
	// MaxRequestExpiry is the furthest in the future the expiry of a
	// request the keys sign may be (default 24h). A key signs only requests
	// that carry privy-request-expiry: its signature then stops being
	// usable at that instant, on this appliance and on any copy of it
	// (a store restored from a backup taken before the request ran has
	// forgotten its digest).
	MaxRequestExpiry time.Duration
	RatePerSecond    float64
	Burst            int
}

// Service manages and uses the keys.
type Service struct {
	st   *store.Store
	keys keys.Backend
	opts Options
	now  func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

// New returns the service over the raw hardware backend; each use of a key
// is recorded by the service itself, in the commit that releases it.
func New(st *store.Store, k keys.Backend, opts Options) *Service {
	if opts.MaxRequestExpiry <= 0 {
		opts.MaxRequestExpiry = 24 * time.Hour
	}
	if opts.RatePerSecond <= 0 {
		opts.RatePerSecond = 100
	}
	if opts.Burst <= 0 {
		opts.Burst = 200
	}
	return &Service{st: st, keys: k, opts: opts, now: time.Now, buckets: map[string]*bucket{}}
}

// Limits of the resource.
const (
	maxDisplayName = 100
	maxPatterns    = 64
	maxCallers     = 64
)

var methods = []string{"*", http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// checkPattern validates "METHOD /path" where * in the path stands for one
// segment.
func checkPattern(p string) error {
	m, path, ok := strings.Cut(p, " ")
	if !ok || !slices.Contains(methods, m) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " ?#") || len(p) > 512 {
		return fmt.Errorf("%q is not \"METHOD /path\" (method POST, PUT, PATCH, DELETE or *; * in the path matches one segment)", p)
	}
	return nil
}

// matches reports whether method and path fit a pattern.
func matches(pattern, method, path string) bool {
	pm, pp, _ := strings.Cut(pattern, " ")
	if pm != "*" && pm != method {
		return false
	}
	want, got := strings.Split(pp, "/"), strings.Split(path, "/")
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if want[i] != "*" && want[i] != got[i] {
			return false
		}
		if want[i] == "*" && got[i] == "" {
			return false
		}
	}
	return true
}

func label(id string) string { return keys.AuthKeyPrefix + id }

// newID makes a 24-character id that is also a valid key label.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 24)
	if _, err := randRead(b); err != nil {
		panic(err)
	}
	for i := range b {
		n := len(alphabet)
		if i == 0 {
			n = 26
		}
		b[i] = alphabet[int(b[i])%n]
	}
	return string(b)
}

// Create is POST /v1/authorization_keys (administrators only; the edge
// checks that). The key is derived in the hardware now, so its public key
// can be returned and registered in a quorum at once.
func (s *Service) Create(ctx context.Context, app string, who Caller, in CreateInput) (*Key, error) {
	if in.DisplayName != nil && utf8.RuneCountInString(*in.DisplayName) > maxDisplayName {
		return nil, errorf(Invalid, "display_name: at most %d characters.", maxDisplayName)
	}
	if in.AllowedCallers == nil || len(in.AllowedCallers.UIDs)+len(in.AllowedCallers.GIDs) == 0 {
		return nil, errorf(Invalid, "allowed_callers: name at least one uid or gid that may use the key ({\"uids\": [...], \"gids\": [...]}).")
	}
	if len(in.AllowedCallers.UIDs)+len(in.AllowedCallers.GIDs) > maxCallers {
		return nil, errorf(Invalid, "allowed_callers: at most %d uids and gids.", maxCallers)
	}
	if len(in.AllowedRequests) > maxPatterns {
		return nil, errorf(Invalid, "allowed_requests: at most %d patterns.", maxPatterns)
	}
	for i, p := range in.AllowedRequests {
		if err := checkPattern(p); err != nil {
			return nil, errorf(Invalid, "allowed_requests[%d]: %v", i, err)
		}
	}
	k := &Key{ID: newID(), DisplayName: in.DisplayName, AllowedCallers: *in.AllowedCallers,
		AllowedRequests: in.AllowedRequests, CreatedAt: s.now().UnixMilli()}
	if k.AllowedRequests == nil {
		k.AllowedRequests = []string{}
	}
	if k.AllowedCallers.UIDs == nil {
		k.AllowedCallers.UIDs = []uint32{}
	}
	if k.AllowedCallers.GIDs == nil {
		k.AllowedCallers.GIDs = []uint32{}
	}
	pub, err := s.keys.AuthKey(ctx, label(k.ID))
	if err != nil {
		return nil, fmt.Errorf("derive authorization key %s: %w", k.ID, err)
	}
	if k.PublicKey, err = keys.PublicKeySPKI(pub); err != nil {
		return nil, err
	}
	uids, _ := json.Marshal(k.AllowedCallers.UIDs)
	gids, _ := json.Marshal(k.AllowedCallers.GIDs)
	reqs, _ := json.Marshal(k.AllowedRequests)
	detail, _ := json.Marshal(map[string]any{"public_key": k.PublicKey, "allowed_callers": k.AllowedCallers, "allowed_requests": k.AllowedRequests})
	err = s.st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`INSERT INTO authorization_keys(id, app_id, display_name, public_key, allowed_uids, allowed_gids, allowed_requests, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, app, k.DisplayName, k.PublicKey, string(uids), string(gids), string(reqs), k.CreatedAt); err != nil {
			return err
		}
		_, err := audit.Append(tx, audit.Entry{Actor: who.Actor, Action: "authorization_key.create", Target: k.ID, Decision: audit.DecisionAllow, Detail: string(detail)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const keyColumns = `id, display_name, public_key, allowed_uids, allowed_gids, allowed_requests, created_at, last_used_at, deleted_at`

func scanKey(row interface{ Scan(...any) error }) (*Key, error) {
	var k Key
	var name sql.NullString
	var uids, gids, reqs string
	var used, deleted sql.NullInt64
	if err := row.Scan(&k.ID, &name, &k.PublicKey, &uids, &gids, &reqs, &k.CreatedAt, &used, &deleted); err != nil {
		return nil, err
	}
	if name.Valid {
		k.DisplayName = &name.String
	}
	if used.Valid {
		k.LastUsedAt = &used.Int64
	}
	if deleted.Valid {
		k.DeletedAt = &deleted.Int64
	}
	if err := errors.Join(json.Unmarshal([]byte(uids), &k.AllowedCallers.UIDs), json.Unmarshal([]byte(gids), &k.AllowedCallers.GIDs),
		json.Unmarshal([]byte(reqs), &k.AllowedRequests)); err != nil {
		return nil, fmt.Errorf("authorization key %s: %w", k.ID, err)
	}
	return &k, nil
}

func loadKey(ctx context.Context, q querier, app, id string) (*Key, error) {
	k, err := scanKey(q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM authorization_keys WHERE id = ? AND app_id = ?`, id, app))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Authorization key %q not found.", id)
	}
	return k, err
}

// Get is GET /v1/authorization_keys/{id}; a deleted key is shown with its
// deleted_at.
func (s *Service) Get(ctx context.Context, app, id string) (*Key, error) {
	return loadKey(ctx, s.st, app, id)
}

// List is GET /v1/authorization_keys: the app's keys, deleted ones
// included, oldest first.
func (s *Service) List(ctx context.Context, app string) ([]*Key, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT `+keyColumns+` FROM authorization_keys WHERE app_id = ? ORDER BY rowid`, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Key{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// Delete is DELETE /v1/authorization_keys/{id} (administrators only): the
// key is disabled for good. Its row stays for the audit; its id is never
// reused, and since the material is derived from the id, nothing can sign
// with it again, on this hardware or after a restore.
func (s *Service) Delete(ctx context.Context, app string, who Caller, id string) (*Key, error) {
	var out *Key
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		k, err := loadKey(ctx, txq{tx}, app, id)
		if err != nil {
			return err
		}
		if k.DeletedAt != nil {
			return errorf(NotFound, "Authorization key %q is already deleted.", id)
		}
		now := s.now().UnixMilli()
		if _, err := tx.Exec(`UPDATE authorization_keys SET deleted_at = ? WHERE id = ?`, now, id); err != nil {
			return err
		}
		k.DeletedAt = &now
		out = k
		_, err = audit.Append(tx, audit.Entry{Actor: who.Actor, Action: "authorization_key.delete", Target: id, Decision: audit.DecisionAllow})
		return err
	})
	return out, err
}

type txq struct{ tx *store.Tx }

func (t txq) QueryRowContext(_ context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRow(q, args...)
}

// Sign is POST /v1/authorization_keys/{id}/sign. It returns the base64 DER
// signature that the privy-authorization-signature header takes.
func (s *Service) Sign(ctx context.Context, app string, who Caller, id string, in SignInput) (string, error) {
	k, err := loadKey(ctx, s.st, app, id)
	if err != nil {
		return "", err
	}
	if k.DeletedAt != nil {
		return "", errorf(Forbidden, "Authorization key %s was deleted and never signs again.", id)
	}
	if !k.AllowedCallers.allow(who) {
		return "", errorf(Forbidden, "uid %d (gid %d) is not an allowed caller of authorization key %s.", who.UID, who.GID, id)
	}
	method := strings.ToUpper(in.Method)
	if !slices.Contains(methods[1:], method) {
		return "", errorf(Invalid, "method: %q is not a method that carries an authorization signature (POST, PUT, PATCH, DELETE).", in.Method)
	}
	path, ok := strings.CutPrefix(in.URL, s.opts.PublicBase)
	if !ok || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
		return "", errorf(Forbidden, "url: this key signs requests to %s only.", s.opts.PublicBase)
	}
	if len(k.AllowedRequests) > 0 && !slices.ContainsFunc(k.AllowedRequests, func(p string) bool { return matches(p, method, path) }) {
		return "", errorf(Forbidden, "Authorization key %s may not sign %s %s (allowed_requests).", id, method, path)
	}
	hdr, err := signedHeaders(in.Headers)
	if err != nil {
		return "", err
	}
	if _, err := quorum.CheckExpiry(hdr.Get(quorum.HeaderRequestExpiry), s.now(), s.opts.MaxRequestExpiry); err != nil {
		return "", errorf(Invalid, "headers.%s: %v.", quorum.HeaderRequestExpiry, err)
	}
	if hdr.Get(quorum.HeaderRequestExpiry) == "" {
		return "", errorf(Invalid, "headers.%s: required; an authorization key signs only requests that expire (at most %s ahead), so its signature can never be replayed later.", quorum.HeaderRequestExpiry, s.opts.MaxRequestExpiry)
	}
	if hdr.Get("privy-app-id") != app {
		return "", errorf(Forbidden, "headers: privy-app-id must be this app's id; a key signs for its own app only.")
	}
	body, err := bodyBytes(in.Body)
	if err != nil {
		return "", err
	}
	payload, err := quorum.Payload(quorum.Request{Method: method, URL: in.URL, Body: body, Headers: hdr})
	if err != nil {
		var ie *quorum.InputError
		if errors.As(err, &ie) {
			return "", errorf(Invalid, "%v", ie)
		}
		return "", err
	}
	if !s.take(id) {
		return "", errorf(RateLimited, "Authorization key %s is over its rate limit (%g per second); retry shortly.", id, s.opts.RatePerSecond)
	}
	digest := sha256.Sum256(payload)
	sig, err := s.keys.SignAuth(ctx, label(id), digest[:])
	if err != nil {
		return "", fmt.Errorf("sign with authorization key %s: %w", id, err)
	}
	bodyDigest := sha256.Sum256(body)
	detail, _ := json.Marshal(map[string]any{"caller_uid": who.UID, "caller_gid": who.GID, "method": method, "path": path,
		"body_sha256": fmt.Sprintf("%x", bodyDigest)})
	err = s.st.Write(ctx, func(tx *store.Tx) error {
		// Checked again at the commit: a delete that committed meanwhile
		// stops this signature.
		var deleted sql.NullInt64
		if err := tx.QueryRow(`SELECT deleted_at FROM authorization_keys WHERE id = ?`, id).Scan(&deleted); err != nil {
			return err
		}
		if deleted.Valid {
			return errorf(Forbidden, "Authorization key %s was deleted and never signs again.", id)
		}
		if _, err := tx.Exec(`UPDATE authorization_keys SET last_used_at = ? WHERE id = ?`, s.now().UnixMilli(), id); err != nil {
			return err
		}
		_, err := audit.Append(tx, audit.Entry{Actor: who.Actor, Action: "authorization_key.sign", Target: id, Decision: audit.DecisionAllow,
			RequestDigest: digest[:], ResultDigest: audit.Digest(sig), Detail: string(detail)})
		return err
	})
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// signedHeaders reads the headers of a request to sign: only the privy-
// headers that go into the signed payload, each once (header names compare
// without case, so "privy-app-id" and "Privy-App-Id" are one header, and
// both given would leave which one counts to the reader).
func signedHeaders(in map[string]string) (http.Header, error) {
	hdr := http.Header{}
	for name := range in {
		canon := http.CanonicalHeaderKey(name)
		switch strings.ToLower(name) {
		case quorum.HeaderAppID, quorum.HeaderIdempotencyKey, quorum.HeaderRequestExpiry:
		default:
			return nil, errorf(Invalid, "headers: %q is not a header of the signed payload (privy-app-id, privy-idempotency-key, privy-request-expiry).", clip.To(name, 64))
		}
		if _, dup := hdr[canon]; dup {
			return nil, errorf(Invalid, "headers: %s is given twice (header names are not case-sensitive).", strings.ToLower(name))
		}
		hdr[canon] = []string{in[name]}
	}
	return hdr, nil
}

// bodyBytes turns the body field into the bytes the request will carry:
// absent, null or "" is no body; an object or array is its JSON.
func bodyBytes(raw json.RawMessage) ([]byte, error) {
	t := strings.TrimSpace(string(raw))
	switch {
	case t == "" || t == "null" || t == `""`:
		return nil, nil
	case strings.HasPrefix(t, "{") || strings.HasPrefix(t, "["):
		return []byte(t), nil
	}
	return nil, errorf(Invalid, "body: the request's JSON body (an object), or \"\" for none.")
}
