// Package quorum verifies Privy authorization signatures and decides whether
// a set of signers satisfies a key quorum.
//
// It owns the exact bytes Privy's SDKs sign for a request (Payload: RFC 8785
// canonical JSON of method, URL, body and the privy- headers), parsing the
// privy-authorization-signature header, parsing and canonicalizing P-256
// public keys, verifying ECDSA P-256 signatures over SHA-256 (Verify), the
// privy-request-expiry check (CheckExpiry), and the quorum rules: m-of-k over
// keys, users and at most five nested quorums one level deep (Quorum).
//
// It is a pure library. It does not read the store, route HTTP, remember
// digests for replay protection or look up user keys: the daemon does, and
// passes the results in. Errors the client caused are *InputError (HTTP 400
// invalid_data) or *AuthError (HTTP 401 unauthorized); anything else is the
// server's fault.
//
// # Compatibility
//
// Byte compatibility with Privy's SDKs is the point of this package. The
// payload is canonicalized with github.com/gowebpki/jcs, the packaged form of
// the reference implementation Privy's Go SDK uses, and the tests check it
// against vectors produced by Privy's Node SDK (testdata/README.md).
//
// Specifications: RFC 8785 (JSON Canonicalization Scheme), SEC 1 and
// RFC 5480 (ECDSA P-256, SubjectPublicKeyInfo), and Privy's authorization
// signature documentation as digested in shared/reference/privy-wallet-api.md
// sections 1 and 2.
package quorum

import (
	"fmt"
)

// MaxChildren is the most nested quorums a key quorum may have (Privy's
// key_quorum_ids maxItems).
const MaxChildren = 5

// Quorum is a key quorum as the verifier sees it.
//
// Members are keys, users and child quorums. Threshold members must approve.
// A child approves, as one member, when its own threshold is met; a child's
// keys and users do not count toward the parent directly. A key listed both
// in the parent and in a child counts for both: once as the parent's own key
// member, and toward the child's threshold.
type Quorum struct {
	ID        string
	Keys      []string // canonical SPKI (CanonicalPublicKey) of member keys
	UserIDs   []string // member users
	Children  []Quorum // nested quorums; their own Children must be empty
	Threshold int      // 1..len(Keys)+len(UserIDs)+len(Children)
}

// members is the number of members of q, a child counting as one.
func (q Quorum) members() int { return len(q.Keys) + len(q.UserIDs) + len(q.Children) }

// Validate checks the structural rules: at least one member, threshold in
// 1..members, at most MaxChildren children, no grandchildren, no duplicate
// key, user or child, no quorum containing itself, no empty id, and every
// key in canonical form. Children are validated by the same rules. A
// violation is an *InputError wrapping ErrInvalidQuorum whose Field is the
// Privy request field at fault (public_keys, user_ids, key_quorum_ids,
// authorization_threshold).
func (q Quorum) Validate() error { return q.validate(true, true) }

// validate checks q; with keys set it also checks that every key is
// canonical, and with children set it accepts children.
func (q Quorum) validate(keys, children bool) error {
	bad := func(field, format string, args ...any) error {
		return inputErr(ErrInvalidQuorum, field, fmt.Sprintf(format, args...))
	}
	if q.members() == 0 {
		return bad("public_keys", "a key quorum needs at least one key, user or key quorum")
	}
	if q.Threshold < 1 || q.Threshold > q.members() {
		return bad("authorization_threshold", "%d is outside 1..%d (the number of members)", q.Threshold, q.members())
	}
	seen := map[string]bool{}
	for i, k := range q.Keys {
		if seen[k] {
			return bad("public_keys", "key %d is listed twice", i+1)
		}
		seen[k] = true
		if keys {
			if c, err := CanonicalizePublicKey(k); err != nil || c != k {
				return bad("public_keys", "key %d is not a canonical P-256 public key", i+1)
			}
		}
	}
	clear(seen)
	for i, u := range q.UserIDs {
		if u == "" {
			return bad("user_ids", "user %d has an empty id", i+1)
		}
		if seen[u] {
			return bad("user_ids", "user %q is listed twice", u)
		}
		seen[u] = true
	}
	if len(q.Children) == 0 {
		return nil
	}
	if !children {
		return bad("key_quorum_ids", "key quorum %q is nested in another and cannot nest key quorums itself (one level only)", q.ID)
	}
	if len(q.Children) > MaxChildren {
		return bad("key_quorum_ids", "%d nested key quorums, at most %d", len(q.Children), MaxChildren)
	}
	clear(seen)
	for i, c := range q.Children {
		switch {
		case c.ID == "":
			return bad("key_quorum_ids", "nested key quorum %d has an empty id", i+1)
		case c.ID == q.ID:
			return bad("key_quorum_ids", "key quorum %q cannot contain itself", c.ID)
		case seen[c.ID]:
			return bad("key_quorum_ids", "key quorum %q is listed twice", c.ID)
		}
		seen[c.ID] = true
		if err := c.validate(keys, false); err != nil {
			return err
		}
	}
	return nil
}

// Candidates returns every key that could sign for q: its own keys and its
// children's, deduplicated, in order. Pass them to Verify.
func (q Quorum) Candidates() []string {
	var out []string
	seen := make(map[string]bool, len(q.Keys))
	add := func(ks []string) {
		for _, k := range ks {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	add(q.Keys)
	for _, c := range q.Children {
		add(c.Keys)
	}
	return out
}

// Satisfied reports whether the approvals meet q's threshold. Each distinct
// member key counts once, each member user once, and each child once when
// its own threshold is met. A quorum that breaks Validate's structural rules
// is never satisfied (key canonical form is not rechecked here).
func (q Quorum) Satisfied(a Approvals) bool {
	if q.validate(false, true) != nil {
		return false
	}
	return q.approvals(a) >= q.Threshold
}

// approvals counts the members of q that approve.
func (q Quorum) approvals(a Approvals) int {
	n := 0
	for _, k := range q.Keys {
		if a.Keys[k] {
			n++
		}
	}
	for _, u := range q.UserIDs {
		if a.Users[u] {
			n++
		}
	}
	for _, c := range q.Children {
		if c.approvals(a) >= c.Threshold {
			n++
		}
	}
	return n
}
