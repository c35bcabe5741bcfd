// Package custody owns the wallet API's resources and rules: key quorums and
// wallets of each app, who may do what with them (owner, additional signer,
// app alone), and the write discipline every change follows: the change, its
// audit record, the idempotency record and the replay digest of the signed
// request commit in one transaction, and nothing is released before it is
// durable.
//
// It is the layer between the HTTP edge (package daemon, which parses
// headers and maps errors to Privy's shape) and the libraries it composes:
// quorum (authorization signatures), wallet (keys and Ethereum signing),
// policy (what a signer may sign), keys (the hardware) and store.
//
// It does not speak HTTP, and it never logs or returns key material.
package custody

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/internal/apierr"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// Kind classifies an error for the HTTP edge (package apierr).
type Kind = apierr.Kind

// Error kinds, each mapped to one Privy error code.
const (
	Invalid         = apierr.Invalid
	Unauthorized    = apierr.Unauthorized
	Forbidden       = apierr.Forbidden
	NotFound        = apierr.NotFound
	Conflict        = apierr.Conflict
	PolicyViolation = apierr.PolicyViolation
	Unavailable     = apierr.Unavailable
	TooManyRequests = apierr.TooManyRequests
)

// Error is a refusal the caller may see. Message never holds a secret.
type Error = apierr.Error

func errorf(k Kind, format string, args ...any) *Error { return apierr.Errorf(k, format, args...) }

// Signed is the authorization part of a request: the canonical payload the
// SDK signed (built by the edge with quorum.Payload), the signatures from
// privy-authorization-signature, and the request's expiry, already checked.
type Signed struct {
	Payload []byte
	Sigs    [][]byte
	Expiry  time.Time // zero when the request carries none

	// mu guards approvals and sigs: the daemon gives each request its own
	// Signed, but a caller of the package may run one Call on several
	// goroutines (the same request sent concurrently), and each must still
	// be authorized on its own.
	mu sync.Mutex
	// approvals are the owners whose approval was verified outside the
	// writer, for the checks inside it (see authorizeOwner).
	approvals map[string]*ownerApproval
	// sigs does each signature's cryptography once for the request,
	// however many quorums it is checked against.
	sigs *quorum.Signatures
}

// signatures are the request's signatures, prepared once.
func (sg *Signed) signatures() *quorum.Signatures {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if sg.sigs == nil {
		sg.sigs = quorum.NewSignatures(sg.Payload, sg.Sigs)
	}
	return sg.sigs
}

// approval returns the approval of owner recorded outside the writer.
func (sg *Signed) approval(owner string) (a *ownerApproval, recorded, ok bool) {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	a, ok = sg.approvals[owner]
	return a, sg.approvals != nil, ok
}

// approve records the approval of owner verified outside the writer.
func (sg *Signed) approve(owner string, a *ownerApproval) {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if sg.approvals == nil {
		sg.approvals = map[string]*ownerApproval{}
	}
	sg.approvals[owner] = a
}

// Call is who asks, and how.
type Call struct {
	App   string
	Actor string // for the audit record: "uid=1000 app=app_x"
	// Signed is nil when the request carries no authorization signature.
	Signed *Signed
	// IdempotencyKey is privy-idempotency-key, or "".
	IdempotencyKey string
	// RequestHash identifies the request for idempotency: the same key with
	// another hash is refused.
	RequestHash []byte
}

// RequestHash is what identifies a request for idempotency: its method,
// path and body.
func RequestHash(method, path string, body []byte) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", method, path)
	h.Write(body)
	return h.Sum(nil)
}

// Options configures the service.
type Options struct {
	// MaxRequestExpiry is the furthest in the future a request's expiry may
	// be (the edge checks it); digests of requests without one are kept
	// forever.
	MaxRequestExpiry time.Duration
	// IdempotencyTTL is how long an idempotency key is kept.
	IdempotencyTTL time.Duration
	// Chains returns the JSON-RPC node of a CAIP-2 chain, if one is
	// configured.
	Chains func(caip2 string) (wallet.Node, bool)
	// JWT returns the verifier of an app's user JWTs, if the app has one.
	JWT func(app string) (JWTVerifier, bool)
	// UserKeyLifetime is how long a user key issued for a JWT approves
	// (never past the JWT's own expiry).
	UserKeyLifetime time.Duration
	// MaxUserKeys is how many live user keys one user may hold; issuing
	// another revokes the oldest.
	MaxUserKeys int
	// ImportKeyLifetime is how long the one-time key of a wallet import
	// waits for its submit.
	ImportKeyLifetime time.Duration
	// MaxPendingImports bounds the imports of one app waiting for their
	// submit.
	MaxPendingImports int
	// Embedded configures embedded wallets.
	Embedded EmbeddedOptions
	Logger   *slog.Logger
	// Observer is told of released signatures and policy decisions (for
	// metrics); nil tells nobody.
	Observer Observer
}

// Service is the wallet API's domain logic.
type Service struct {
	st     *store.Store
	keys   keys.Backend
	policy PolicyEngine
	opts   Options
	now    func() time.Time
	// imports are the one-time keys of wallet imports between init and
	// submit.
	imports oneTime[pendingImport]
	// challenges are the open challenges of embedded wallets.
	challenges oneTime[pendingChallenge]
	// members caches quorum members by quorum version.
	members memberCache
	// afterAuthorize, when set (tests only), runs right after a release's
	// signatures were checked: it stands for a change that commits between
	// the check and the release.
	afterAuthorize func()
}

func (s *Service) authorized() {
	if s.afterAuthorize != nil {
		s.afterAuthorize()
	}
}

// New returns the service. keys is the raw hardware backend: the service
// records each use of a key in the audit record of the action it serves. A
// nil policy engine means the store's own policies, condition sets and
// aggregations (tests pass fakes above that boundary).
func New(st *store.Store, k keys.Backend, p PolicyEngine, opts Options) *Service {
	if opts.MaxRequestExpiry <= 0 {
		opts.MaxRequestExpiry = 24 * time.Hour
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if opts.Chains == nil {
		opts.Chains = func(string) (wallet.Node, bool) { return nil, false }
	}
	if opts.JWT == nil {
		opts.JWT = func(string) (JWTVerifier, bool) { return nil, false }
	}
	if opts.UserKeyLifetime <= 0 {
		opts.UserKeyLifetime = 15 * time.Minute
	}
	if opts.MaxUserKeys <= 0 {
		opts.MaxUserKeys = 20
	}
	if opts.ImportKeyLifetime <= 0 {
		opts.ImportKeyLifetime = 10 * time.Minute
	}
	if opts.MaxPendingImports <= 0 {
		opts.MaxPendingImports = 100
	}
	opts.Embedded = opts.Embedded.withDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Service{st: st, keys: k, policy: p, opts: opts, now: time.Now}
	if p == nil {
		s.policy = newStoredPolicies(s)
	}
	return s
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// newID makes a 24-character id of lower-case letters and digits starting
// with a letter, the shape of Privy's cuid2 ids.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 24)
	rand.Read(b)
	for i := range b {
		n := len(alphabet)
		if i == 0 {
			n = 26
		}
		b[i] = alphabet[int(b[i])%n]
	}
	return string(b)
}

// idemMode says what a commit does with the call's idempotency key.
type idemMode int

const (
	idemStore    idemMode = iota // store the response under the key
	idemPending                  // mark the key as in progress (the response comes later)
	idemComplete                 // store the response under a key marked in progress
)

// action is one change the service commits.
type action struct {
	call        Call
	name        string // audit action, "wallet.create"
	target      string
	detail      map[string]any
	replay      bool // record the signed request's digest
	idempotency idemMode
	response    func(tx *store.Tx) (any, error)
}

// commit runs a change in one write transaction: it returns the stored
// response of an idempotency key seen before (or refuses a different
// request under it), refuses a replayed signed request, applies the change,
// and appends the audit record, all of which commit together. The response
// is released only after the commit.
func (s *Service) commit(ctx context.Context, a action) (json.RawMessage, error) {
	var out json.RawMessage
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		if a.call.IdempotencyKey != "" && a.idempotency != idemComplete {
			stored, err := s.idempotent(tx, a.call)
			if err != nil || stored != nil {
				out = stored
				return err
			}
		}
		if a.replay && a.call.Signed != nil {
			if err := s.rememberDigest(tx, a.call.Signed); err != nil {
				return err
			}
		}
		res, err := a.response(tx)
		if err != nil {
			return err
		}
		if out, err = json.Marshal(res); err != nil {
			return err
		}
		detail, _ := json.Marshal(a.detail)
		if _, err := audit.Append(tx, audit.Entry{
			Actor: a.call.Actor, Action: a.name, Target: a.target, Decision: audit.DecisionAllow,
			RequestDigest: a.call.RequestHash, ResultDigest: audit.Digest(out), Detail: string(detail),
		}); err != nil {
			return err
		}
		if a.call.IdempotencyKey != "" {
			var err error
			switch a.idempotency {
			case idemStore:
				_, err = tx.Exec(`INSERT INTO idempotency_keys(app_id, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)`,
					a.call.App, a.call.IdempotencyKey, a.call.RequestHash, []byte(out), s.nowMS())
			case idemPending:
				_, err = tx.Exec(`INSERT INTO idempotency_keys(app_id, key, request_hash, response, created_at) VALUES (?, ?, ?, x'', ?)`,
					a.call.App, a.call.IdempotencyKey, a.call.RequestHash, s.nowMS())
			case idemComplete:
				_, err = tx.Exec(`UPDATE idempotency_keys SET response = ? WHERE app_id = ? AND key = ?`, []byte(out), a.call.App, a.call.IdempotencyKey)
			}
			if err != nil {
				return fmt.Errorf("store idempotency key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// errIdempotencyReused is Privy's own message for a key reused with another body.
var errIdempotencyReused = errorf(Invalid, "Idempotency key was reused for a request with a new body. Please create a new idempotency key for the request.")

// errIdempotencyPending refuses a retry of a request still in progress, or
// one whose outcome is unknown (a broadcast the node did not confirm).
var errIdempotencyPending = errorf(Conflict, "A request with this idempotency key is in progress, or its broadcast did not complete and its outcome is unknown; check the chain before sending a new request.")

// idempotent returns the stored response for the call's idempotency key, nil
// when the key is new, or an error when it was used for another request.
func (s *Service) idempotent(tx *store.Tx, c Call) (json.RawMessage, error) {
	var hash, resp []byte
	var created int64
	err := tx.QueryRow(`SELECT request_hash, response, created_at FROM idempotency_keys WHERE app_id = ? AND key = ?`,
		c.App, c.IdempotencyKey).Scan(&hash, &resp, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err == nil && s.nowMS()-created > s.opts.IdempotencyTTL.Milliseconds() {
		// Expired, not yet purged: the key is free again.
		_, derr := tx.Exec(`DELETE FROM idempotency_keys WHERE app_id = ? AND key = ?`, c.App, c.IdempotencyKey)
		return nil, derr
	}
	if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if string(hash) != string(c.RequestHash) {
		return nil, errIdempotencyReused
	}
	if len(resp) == 0 {
		return nil, errIdempotencyPending
	}
	return resp, nil
}

// Replayed reports an idempotency key's stored response before any work is
// done, so a retry does not sign or generate again. ok is false for a new
// key.
func (s *Service) Replayed(ctx context.Context, c Call) (json.RawMessage, bool, error) {
	if c.IdempotencyKey == "" {
		return nil, false, nil
	}
	var hash, resp []byte
	var created int64
	err := s.st.QueryRowContext(ctx, `SELECT request_hash, response, created_at FROM idempotency_keys WHERE app_id = ? AND key = ?`,
		c.App, c.IdempotencyKey).Scan(&hash, &resp, &created)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && s.nowMS()-created > s.opts.IdempotencyTTL.Milliseconds()) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read idempotency key: %w", err)
	}
	if string(hash) != string(c.RequestHash) {
		return nil, false, errIdempotencyReused
	}
	if len(resp) == 0 {
		return nil, false, errIdempotencyPending
	}
	return resp, true, nil
}

// replayMargin is how long past its expiry the digest of an expiring
// request is kept: the expiry check reads the wall clock, and a clock
// stepped back by less than this cannot make a purged request valid again.
const replayMargin = 15 * time.Minute

// rememberDigest records an accepted signed request and refuses one already
// accepted. A request with an expiry is remembered until it could no longer
// be accepted; one without is remembered for the lifetime of the store.
func (s *Service) rememberDigest(tx *store.Tx, sg *Signed) error {
	d := sha256.Sum256(sg.Payload)
	var until any // NULL: forever
	if !sg.Expiry.IsZero() {
		until = sg.Expiry.Add(replayMargin).UnixMilli()
	}
	_, err := tx.Exec(`INSERT INTO replay_digests(digest, expires_at) VALUES (?, ?)`, d[:], until)
	if store.IsConstraint(err) {
		return errReplayed
	}
	return err
}

var errReplayed = errorf(Unauthorized, "This signed request was already accepted once; sign a new request (a new request expiry or idempotency key makes it new).")

// Purge deletes replay digests past their expiry, idempotency keys past
// their TTL, and aggregation contributions older than any window. The daemon
// calls it periodically.
func (s *Service) Purge(ctx context.Context) error {
	now := s.nowMS()
	return s.st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM replay_digests WHERE expires_at < ?`, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM idempotency_keys WHERE created_at < ?`, now-s.opts.IdempotencyTTL.Milliseconds()); err != nil {
			return err
		}
		// An expired or revoked user key never approves again; the audit
		// record of its issue stays.
		if _, err := tx.Exec(`DELETE FROM user_keys WHERE expires_at < ? OR revoked_at IS NOT NULL`, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM share_releases WHERE at < ?`, now-s.opts.Embedded.Window.Milliseconds()); err != nil {
			return err
		}
		// No window is longer than policy.MaxWindowSeconds: older
		// contributions can never count again.
		if _, err := tx.Exec(`DELETE FROM aggregation_events_legacy WHERE at < ?`, now-policy.MaxWindowSeconds*1000); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM aggregation_events WHERE at < ?`, now-policy.MaxWindowSeconds*1000)
		return err
	})
}
