package custody

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

// Limits from Privy's schema.
const (
	maxChildren        = 5
	maxDisplayName     = 50
	maxQuorumKeys      = 50
	maxWalletNameChars = 100
)

// MaxAdditionalSigners bounds a wallet's additional signers (Privy's schema
// sets no limit), enforced when a wallet is written and when it signs. With
// it the keys one signing request is checked against are bounded: the owner
// and each signer are a quorum of at most 50 keys and 50 users, with at
// most 5 nested quorums of the same size.
const MaxAdditionalSigners = 16

// AuthorizationKey is a member key as the API shows it.
type AuthorizationKey struct {
	PublicKey   string  `json:"public_key"`
	DisplayName *string `json:"display_name"`
}

// KeyQuorum is a key quorum as the API shows it.
type KeyQuorum struct {
	ID                     string             `json:"id"`
	DisplayName            *string            `json:"display_name"`
	AuthorizationThreshold int                `json:"authorization_threshold"`
	AuthorizationKeys      []AuthorizationKey `json:"authorization_keys"`
	UserIDs                []string           `json:"user_ids"`
	KeyQuorumIDs           []string           `json:"key_quorum_ids"`
	CreatedAt              int64              `json:"created_at"`
}

// QuorumInput is the body of POST and PATCH /v1/key_quorums. On PATCH, a nil
// field is left as it is.
type QuorumInput struct {
	PublicKeys             *[]string `json:"public_keys"`
	UserIDs                *[]string `json:"user_ids"`
	KeyQuorumIDs           *[]string `json:"key_quorum_ids"`
	AuthorizationThreshold *int      `json:"authorization_threshold"`
	DisplayName            *string   `json:"display_name"`
}

// querier is a read view: the reader pool, or the writer's transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// txq adapts a write transaction to querier, so reads inside a write see
// its uncommitted changes.
type txq struct{ tx *store.Tx }

func (t txq) QueryRowContext(_ context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRow(q, args...)
}
func (t txq) QueryContext(_ context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.Query(q, args...)
}

// members are a quorum version's members, as the member cache keeps them;
// readers get copies.
type members struct {
	keys     []AuthorizationKey
	users    []string
	children []string
}

// memberCache keeps the members of recently read quorum versions, so that a
// signing request reads a quorum's row (with its version) and not its
// members: with 50 keys and 5 nested quorums, 6 rows instead of 306.
type memberCache struct {
	mu sync.Mutex
	m  map[string]cachedMembers
}

type cachedMembers struct {
	version int64
	members
}

// maxCachedQuorums bounds the cache; when full it is emptied.
const maxCachedQuorums = 100_000

func (c *memberCache) get(id string, version int64) (members, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[id]
	return m.members, ok && m.version == version
}

func (c *memberCache) put(id string, version int64, m members) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedQuorums {
		c.m = map[string]cachedMembers{}
	}
	if cur, ok := c.m[id]; !ok || cur.version <= version {
		c.m[id] = cachedMembers{version: version, members: m}
	}
}

// storedQuorum is a quorum as stored, with its view.
type storedQuorum struct {
	view     KeyQuorum
	implicit bool
	// version is the row's version, read in the same statement as the row
	// and before its members: any later change of either bumps it.
	version int64
}

// loadQuorum reads one quorum of app; a deleted or foreign one is not found.
func (s *Service) loadQuorum(ctx context.Context, q querier, app, id string) (*storedQuorum, error) {
	var sq storedQuorum
	var name sql.NullString
	var implicit int
	err := q.QueryRowContext(ctx, `SELECT id, display_name, threshold, implicit, created_at, version FROM key_quorums
		WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, app).Scan(&sq.view.ID, &name, &sq.view.AuthorizationThreshold, &implicit, &sq.view.CreatedAt, &sq.version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Key quorum %q not found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read key quorum %s: %w", id, err)
	}
	sq.implicit = implicit == 1
	if name.Valid {
		sq.view.DisplayName = &name.String
	}
	// The members of a version never change (every change of them bumps
	// the version), so they are read once per version.
	if m, ok := s.members.get(id, sq.version); ok {
		// Copies: callers may append to what they get.
		sq.view.AuthorizationKeys, sq.view.UserIDs, sq.view.KeyQuorumIDs = slices.Clone(m.keys), slices.Clone(m.users), slices.Clone(m.children)
		return &sq, nil
	}
	if err := readMembers(ctx, q, &sq); err != nil {
		return nil, err
	}
	// Filled only from committed reads: a write transaction's view may
	// still roll back.
	if _, inWriter := q.(txq); !inWriter {
		s.members.put(id, sq.version, members{keys: sq.view.AuthorizationKeys, users: sq.view.UserIDs, children: sq.view.KeyQuorumIDs})
	}
	return &sq, nil
}

// readMembers reads a quorum's members into sq.
func readMembers(ctx context.Context, q querier, sq *storedQuorum) error {
	id := sq.view.ID
	rows, err := q.QueryContext(ctx, `SELECT public_key, key_name, user_id, child_id FROM key_quorum_members WHERE quorum_id = ? ORDER BY position`, id)
	if err != nil {
		return fmt.Errorf("read key quorum %s members: %w", id, err)
	}
	defer rows.Close()
	sq.view.AuthorizationKeys, sq.view.UserIDs, sq.view.KeyQuorumIDs = []AuthorizationKey{}, []string{}, []string{}
	for rows.Next() {
		var pk, kn, uid, child sql.NullString
		if err := rows.Scan(&pk, &kn, &uid, &child); err != nil {
			return err
		}
		switch {
		case pk.Valid:
			k := AuthorizationKey{PublicKey: pk.String}
			if kn.Valid {
				k.DisplayName = &kn.String
			}
			sq.view.AuthorizationKeys = append(sq.view.AuthorizationKeys, k)
		case uid.Valid:
			sq.view.UserIDs = append(sq.view.UserIDs, uid.String)
		case child.Valid:
			sq.view.KeyQuorumIDs = append(sq.view.KeyQuorumIDs, child.String)
		}
	}
	return rows.Err()
}

// verifier loads q with its children as the verifier needs it. When
// versions is not nil, it records the version of each quorum it read (sq
// and its children) as read.
func (s *Service) verifier(ctx context.Context, q querier, app string, sq *storedQuorum, versions ...map[string]int64) (quorum.Quorum, error) {
	for _, v := range versions {
		v[sq.view.ID] = sq.version
	}
	out := quorum.Quorum{ID: sq.view.ID, UserIDs: sq.view.UserIDs, Threshold: sq.view.AuthorizationThreshold}
	for _, k := range sq.view.AuthorizationKeys {
		out.Keys = append(out.Keys, k.PublicKey)
	}
	for _, cid := range sq.view.KeyQuorumIDs {
		child, err := s.loadQuorum(ctx, q, app, cid)
		if err != nil {
			return quorum.Quorum{}, fmt.Errorf("child quorum of %s: %w", sq.view.ID, err)
		}
		cq, err := s.verifier(ctx, q, app, child, versions...)
		if err != nil {
			return quorum.Quorum{}, err
		}
		out.Children = append(out.Children, cq)
	}
	return out, nil
}

// approved checks the request's signatures against a quorum: its member
// keys and the live user keys of its member users. A signature from outside
// the quorum refuses the request, as Privy's servers do. It also returns the
// user keys that may have approved (every live key of each user whose
// approval counted), so that the release can check they are still live.
func (s *Service) approved(ctx context.Context, q querier, app string, vq quorum.Quorum, sg *Signed) (bool, []string, error) {
	if sg == nil || len(sg.Sigs) == 0 {
		return false, nil, nil
	}
	uk, err := s.userKeys(ctx, q, app, vq)
	if err != nil {
		return false, nil, err
	}
	a, err := sg.signatures().Verify(vq.Candidates(), uk)
	if errors.Is(err, quorum.ErrUnknownSigner) {
		if stale, serr := s.staleUserKey(ctx, q, app, vq, sg); serr != nil {
			return false, nil, serr
		} else if stale != nil {
			return false, nil, stale
		}
	}
	if err != nil {
		return false, nil, err
	}
	var used []string
	for pk, user := range uk {
		if a.Users[user] {
			used = append(used, pk)
		}
	}
	sort.Strings(used)
	return vq.Satisfied(a), used, nil
}

// userKeysLive refuses a release when a user key that approved it was
// revoked, or expired, after the check: the key no longer speaks for its
// user at the instant the signature is released.
func (s *Service) userKeysLive(tx *store.Tx, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	var n int
	err := tx.QueryRow(`SELECT COUNT(*) FROM user_keys k JOIN users u ON u.id = k.user_id
		WHERE k.expires_at > ? AND k.revoked_at IS NULL AND u.deleted_at IS NULL AND k.public_key IN (`+placeholders(len(keys))+`)`,
		append([]any{s.nowMS()}, anys(keys)...)...).Scan(&n)
	if err != nil {
		return fmt.Errorf("read user keys: %w", err)
	}
	if n != len(keys) {
		return errorf(Conflict, "A user key that approved this request was revoked or expired while it was being processed; nothing was released. Exchange the user's JWT for a new key and send a new request.")
	}
	return nil
}

// staleUserKey explains a refusal better than "unknown signer" when a
// signature comes from a member user's key that has expired or was revoked:
// the SDK caches a user key until its expiry, and a client clock running
// behind makes it send one a moment too late. It runs on the refusal path
// only, and costs lookups and at most one confirmation.
func (s *Service) staleUserKey(ctx context.Context, q querier, app string, vq quorum.Quorum, sg *Signed) (*Error, error) {
	users := approvingUsers(vq)
	if len(users) == 0 {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT public_key, user_id, expires_at, revoked_at IS NOT NULL FROM user_keys
		WHERE app_id = ? AND (expires_at <= ? OR revoked_at IS NOT NULL) AND user_id IN (`+placeholders(len(users))+`)
		ORDER BY created_at DESC LIMIT 100`, append([]any{app, s.nowMS()}, anys(users)...)...)
	if err != nil {
		return nil, fmt.Errorf("read stale user keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pk, uid string
		var exp int64
		var revoked bool
		if err := rows.Scan(&pk, &uid, &exp, &revoked); err != nil {
			return nil, err
		}
		// A lookup among the signatures' recovered keys, not a
		// verification per key.
		if sg.signatures().SignedBy(pk) {
			if revoked {
				return errorf(Unauthorized, "The request is signed with a revoked user key of user %s (the user was deleted or holds newer keys); exchange the user's JWT for a new key.", uid), nil
			}
			return errorf(Unauthorized, "The request is signed with a user key of user %s that expired at %s; exchange the user's JWT for a new key.",
				uid, time.UnixMilli(exp).UTC().Format(time.RFC3339)), nil
		}
	}
	return nil, rows.Err()
}

// ownerApproval is an owner's approval of a request, checked outside the
// writer: the versions of the quorums read for the check (the owner and its
// children) and the user keys that may have approved.
type ownerApproval struct {
	versions map[string]int64
	userKeys []string
}

// authorizeOwner checks that a request on a resource owned by ownerID
// carries its owner quorum's threshold. A resource without an owner is
// managed with the app's credentials alone.
//
// Signatures are verified only outside the single writer: called with the
// reader pool, authorizeOwner verifies and records the approval on sg;
// called again inside the write transaction (q is a txq) for the same
// owner, it verifies nothing and only checks that what the approval read is
// unchanged (quorum versions, live user keys), so that one request's
// verification never holds every other commit. An owner that was not
// approved outside (it changed in between) is a conflict.
func (s *Service) authorizeOwner(ctx context.Context, q querier, app, ownerID string, sg *Signed, what string) error {
	if ownerID == "" {
		return nil
	}
	if tx, inWriter := q.(txq); inWriter && sg != nil {
		if a, recorded, ok := sg.approval(ownerID); recorded {
			if !ok {
				return errorf(Conflict, "The owner of %s changed while the request was being authorized; nothing was changed. Send the request again.", what)
			}
			same, err := quorumsUnchanged(tx.tx, a.versions)
			if err != nil {
				return err
			}
			if !same {
				return errorf(Conflict, "The owner of %s changed while the request was being authorized; nothing was changed. Send the request again.", what)
			}
			return s.userKeysLive(tx.tx, a.userKeys)
		}
	}
	owner, err := s.loadQuorum(ctx, q, app, ownerID)
	if err != nil {
		return fmt.Errorf("owner of %s: %w", what, err)
	}
	versions := map[string]int64{}
	vq, err := s.verifier(ctx, q, app, owner, versions)
	if err != nil {
		return err
	}
	if sg == nil || len(sg.Sigs) == 0 {
		return errorf(Unauthorized, "%s has an owner: the request needs privy-authorization-signature from its owner (key quorum %s, %d of %d).",
			capitalize(what), ownerID, vq.Threshold, memberCount(vq))
	}
	ok, used, err := s.approved(ctx, q, app, vq, sg)
	var ce *Error
	var ae *quorum.AuthError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &ae):
		return errorf(Unauthorized, "Invalid authorization signature: %v.", err)
	case err != nil:
		return err // the store, not the request
	}
	if !ok {
		return errorf(Unauthorized, "The authorization signatures do not meet the threshold of the owner of %s (key quorum %s needs %d).", what, ownerID, vq.Threshold)
	}
	if _, inWriter := q.(txq); !inWriter {
		sg.approve(ownerID, &ownerApproval{versions: versions, userKeys: used})
		s.authorized()
	}
	return nil
}

// quorumsUnchanged reports whether every quorum still has the version
// recorded.
func quorumsUnchanged(tx *store.Tx, versions map[string]int64) (bool, error) {
	for id, want := range versions {
		var got int64
		if err := tx.QueryRow(`SELECT version FROM key_quorums WHERE id = ?`, id).Scan(&got); err != nil {
			return false, fmt.Errorf("read key quorum %s version: %w", id, err)
		}
		if got != want {
			return false, nil
		}
	}
	return true, nil
}

func memberCount(q quorum.Quorum) int { return len(q.Keys) + len(q.UserIDs) + len(q.Children) }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// quorumSpec is a validated quorum to write.
type quorumSpec struct {
	keys      []string // canonical SPKI
	keyNames  []*string
	users     []string
	children  []string
	threshold int
	name      *string
}

// validateQuorum builds a quorum spec from input (merged over the current
// quorum on PATCH) and checks Privy's rules.
func (s *Service) validateQuorum(ctx context.Context, q querier, app, selfID string, in QuorumInput, cur *KeyQuorum) (quorumSpec, error) {
	var spec quorumSpec
	if cur != nil {
		for _, k := range cur.AuthorizationKeys {
			spec.keys, spec.keyNames = append(spec.keys, k.PublicKey), append(spec.keyNames, k.DisplayName)
		}
		spec.users, spec.children, spec.threshold, spec.name = cur.UserIDs, cur.KeyQuorumIDs, cur.AuthorizationThreshold, cur.DisplayName
	}
	if in.PublicKeys != nil {
		spec.keys, spec.keyNames = nil, nil
		if len(*in.PublicKeys) > maxQuorumKeys {
			return spec, errorf(Invalid, "public_keys: at most %d keys.", maxQuorumKeys)
		}
		seen := map[string]bool{}
		for i, pk := range *in.PublicKeys {
			pub, err := quorum.ParsePublicKey(pk)
			if err != nil {
				return spec, errorf(Invalid, "public_keys[%d]: %v", i, err)
			}
			c := quorum.CanonicalPublicKey(pub)
			if seen[c] {
				return spec, errorf(Invalid, "public_keys[%d]: the same key is listed twice.", i)
			}
			seen[c] = true
			spec.keys, spec.keyNames = append(spec.keys, c), append(spec.keyNames, nil)
		}
	}
	if in.UserIDs != nil {
		spec.users = nil
		if len(*in.UserIDs) > maxQuorumKeys {
			return spec, errorf(Invalid, "user_ids: at most %d users.", maxQuorumKeys)
		}
		seen := map[string]bool{}
		for i, uid := range *in.UserIDs {
			field := fmt.Sprintf("user_ids[%d]", i)
			if seen[uid] {
				return spec, errorf(Invalid, "%s: %q is listed twice.", field, clip.To(uid, 64))
			}
			seen[uid] = true
			if err := userValid(ctx, q, app, field, uid); err != nil {
				return spec, err
			}
			spec.users = append(spec.users, uid)
		}
	}
	if in.KeyQuorumIDs != nil {
		spec.children = nil
		if len(*in.KeyQuorumIDs) > maxChildren {
			return spec, errorf(Invalid, "key_quorum_ids: at most %d nested key quorums.", maxChildren)
		}
		seen := map[string]bool{}
		for i, cid := range *in.KeyQuorumIDs {
			if cid == selfID {
				return spec, errorf(Invalid, "key_quorum_ids[%d]: a key quorum cannot contain itself.", i)
			}
			if seen[cid] {
				return spec, errorf(Invalid, "key_quorum_ids[%d]: %q is listed twice.", i, cid)
			}
			seen[cid] = true
			child, err := s.loadQuorum(ctx, q, app, cid)
			if err != nil {
				return spec, errorf(Invalid, "key_quorum_ids[%d]: %s", i, err.Error())
			}
			if len(child.view.KeyQuorumIDs) > 0 {
				return spec, errorf(Invalid, "key_quorum_ids[%d]: %q has nested key quorums of its own; nesting is one level deep.", i, cid)
			}
			spec.children = append(spec.children, cid)
		}
		if selfID != "" && len(spec.children) > 0 {
			// A quorum that is itself a child may not gain children.
			var parents int
			if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM key_quorum_members m JOIN key_quorums k ON k.id = m.quorum_id
				WHERE m.child_id = ? AND k.deleted_at IS NULL`, selfID).Scan(&parents); err != nil {
				return spec, err
			}
			if parents > 0 {
				return spec, errorf(Invalid, "key_quorum_ids: this key quorum is nested in another; nesting is one level deep.")
			}
		}
	}
	if in.AuthorizationThreshold != nil {
		spec.threshold = *in.AuthorizationThreshold
	}
	if in.DisplayName != nil {
		if utf8.RuneCountInString(*in.DisplayName) > maxDisplayName {
			return spec, errorf(Invalid, "display_name: at most %d characters.", maxDisplayName)
		}
		spec.name = in.DisplayName
	}
	members := len(spec.keys) + len(spec.users) + len(spec.children)
	if members == 0 {
		return spec, errorf(Invalid, "A key quorum needs at least one member: public_keys, user_ids or key_quorum_ids.")
	}
	if spec.threshold == 0 && in.AuthorizationThreshold == nil && cur == nil {
		spec.threshold = members // Privy's default: all members
	}
	if spec.threshold < 1 || spec.threshold > members {
		return spec, errorf(Invalid, "authorization_threshold: %d is not between 1 and the %d member(s).", spec.threshold, members)
	}
	return spec, nil
}

// writeQuorum inserts a quorum row and its members.
func writeQuorum(tx *store.Tx, app, id string, spec quorumSpec, implicit bool, created int64) error {
	imp := 0
	if implicit {
		imp = 1
	}
	if _, err := tx.Exec(`INSERT INTO key_quorums(id, app_id, display_name, threshold, implicit, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		id, app, spec.name, spec.threshold, imp, created); err != nil {
		return fmt.Errorf("insert key quorum: %w", err)
	}
	return writeMembers(tx, id, spec)
}

func writeMembers(tx *store.Tx, id string, spec quorumSpec) error {
	pos := 0
	add := func(pk, name, uid, child any) error {
		pos++
		_, err := tx.Exec(`INSERT INTO key_quorum_members(quorum_id, position, public_key, key_name, user_id, child_id) VALUES (?, ?, ?, ?, ?, ?)`,
			id, pos, pk, name, uid, child)
		return err
	}
	for i, k := range spec.keys {
		if err := add(k, spec.keyNames[i], nil, nil); err != nil {
			return err
		}
	}
	for _, u := range spec.users {
		if err := add(nil, nil, u, nil); err != nil {
			return err
		}
	}
	for _, c := range spec.children {
		if err := add(nil, nil, nil, c); err != nil {
			return err
		}
	}
	return nil
}

// CreateQuorum is POST /v1/key_quorums: the app's credentials alone.
func (s *Service) CreateQuorum(ctx context.Context, c Call, in QuorumInput) ([]byte, error) {
	if in.PublicKeys == nil && in.UserIDs == nil && in.KeyQuorumIDs == nil {
		return nil, errorf(Invalid, "A key quorum needs at least one of public_keys, user_ids, key_quorum_ids.")
	}
	id := newID()
	return s.commit(ctx, action{
		call: c, name: "key_quorum.create", target: id,
		response: func(tx *store.Tx) (any, error) {
			spec, err := s.validateQuorum(ctx, txq{tx}, c.App, "", in, nil)
			if err != nil {
				return nil, err
			}
			if err := writeQuorum(tx, c.App, id, spec, false, s.nowMS()); err != nil {
				return nil, err
			}
			sq, err := s.loadQuorum(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			return sq.view, nil
		},
	})
}

// GetQuorum is GET /v1/key_quorums/{id}.
func (s *Service) GetQuorum(ctx context.Context, app, id string) (KeyQuorum, error) {
	sq, err := s.loadQuorum(ctx, s.st, app, id)
	if err != nil {
		return KeyQuorum{}, err
	}
	return sq.view, nil
}

// UpdateQuorum is PATCH /v1/key_quorums/{id}: the quorum's own threshold.
func (s *Service) UpdateQuorum(ctx context.Context, c Call, id string, in QuorumInput) ([]byte, error) {
	if err := s.authorizeOwner(ctx, s.st, c.App, id, c.Signed, "key quorum "+id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{
		call: c, name: "key_quorum.update", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			cur, err := s.loadQuorum(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			if err := s.authorizeOwner(ctx, txq{tx}, c.App, id, c.Signed, "key quorum "+id); err != nil {
				return nil, err
			}
			spec, err := s.validateQuorum(ctx, txq{tx}, c.App, id, in, &cur.view)
			if err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`UPDATE key_quorums SET display_name = ?, threshold = ?, version = version + 1 WHERE id = ?`, spec.name, spec.threshold, id); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`DELETE FROM key_quorum_members WHERE quorum_id = ?`, id); err != nil {
				return nil, err
			}
			if err := writeMembers(tx, id, spec); err != nil {
				return nil, err
			}
			sq, err := s.loadQuorum(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			return sq.view, nil
		},
	})
}

// DeleteQuorum is DELETE /v1/key_quorums/{id}: the quorum's own threshold,
// and only when nothing uses it.
func (s *Service) DeleteQuorum(ctx context.Context, c Call, id string) ([]byte, error) {
	if err := s.authorizeOwner(ctx, s.st, c.App, id, c.Signed, "key quorum "+id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{
		call: c, name: "key_quorum.delete", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.loadQuorum(ctx, txq{tx}, c.App, id); err != nil {
				return nil, err
			}
			if err := s.authorizeOwner(ctx, txq{tx}, c.App, id, c.Signed, "key quorum "+id); err != nil {
				return nil, err
			}
			if users, err := s.quorumReferrers(ctx, txq{tx}, id); err != nil {
				return nil, err
			} else if len(users) > 0 {
				return nil, errorf(Conflict, "Key quorum %s is still used by %s; change those first.", id, strings.Join(users, ", "))
			}
			if _, err := tx.Exec(`UPDATE key_quorums SET deleted_at = ?, version = version + 1 WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		},
	})
}

// quorumReferrers lists what refers to a quorum: live wallets owning or
// signing with it, live policies, condition sets and aggregations it owns,
// and parent quorums.
func (s *Service) quorumReferrers(ctx context.Context, q querier, id string) ([]string, error) {
	uses := []struct{ name, query string }{
		{"wallet", `SELECT w.id FROM wallet_quorums wq CROSS JOIN wallets w
			WHERE wq.quorum_id = ? AND w.id = wq.wallet_id AND w.archived_at IS NULL ORDER BY w.rowid`},
		{"policy", `SELECT id FROM policies WHERE owner_id = ? AND deleted_at IS NULL`},
		{"condition set", `SELECT id FROM condition_sets WHERE owner_id = ? AND deleted_at IS NULL`},
		{"aggregation", `SELECT id FROM aggregations WHERE owner_id = ? AND deleted_at IS NULL`},
		{"key quorum", `SELECT m.quorum_id FROM key_quorum_members m JOIN key_quorums k ON k.id = m.quorum_id
			WHERE m.child_id = ? AND k.deleted_at IS NULL`},
	}
	var out []string
	for _, u := range uses {
		ids, err := queryIDs(ctx, q, u.query, id)
		if err != nil {
			return nil, err
		}
		for _, r := range ids {
			out = append(out, u.name+" "+r)
		}
	}
	sort.Strings(out)
	return out, nil
}

// queryIDs runs a query whose rows are one string each.
func queryIDs(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, id)
	}
	return out, errors.Join(rows.Err(), rows.Close())
}
