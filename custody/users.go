package custody

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

// Limits on user input.
const (
	// maxCustomUserID matches the longest user id claim jwtauth accepts.
	maxCustomUserID = 256
	// maxCustomMetadata bounds the stored custom_metadata object, in bytes
	// of JSON.
	maxCustomMetadata = 4096
	// userIDPrefix is the shape of Privy's user ids (a DID), which client
	// code may rely on.
	userIDPrefix = "did:privy:"
)

// LinkedAccount is a user's custom_auth account as the API shows it. Times
// are Unix seconds, as in Privy's user object.
type LinkedAccount struct {
	Type             string `json:"type"`
	CustomUserID     string `json:"custom_user_id"`
	VerifiedAt       int64  `json:"verified_at"`
	FirstVerifiedAt  *int64 `json:"first_verified_at"`
	LatestVerifiedAt *int64 `json:"latest_verified_at"`
}

// User is a user as the API shows it (Privy's User object, with the fields
// Cachet has: one custom_auth linked account, no MFA, never a guest).
type User struct {
	ID               string          `json:"id"`
	CreatedAt        int64           `json:"created_at"` // Unix seconds
	HasAcceptedTerms bool            `json:"has_accepted_terms"`
	IsGuest          bool            `json:"is_guest"`
	LinkedAccounts   []LinkedAccount `json:"linked_accounts"`
	MFAMethods       []struct{}      `json:"mfa_methods"`
	CustomMetadata   json.RawMessage `json:"custom_metadata,omitempty"`
}

// linkedAccountInput is one element of linked_accounts in POST /v1/users.
type linkedAccountInput struct {
	Type         string `json:"type"`
	CustomUserID string `json:"custom_user_id"`
}

// userInput is the body of POST /v1/users.
type userInput struct {
	LinkedAccounts []json.RawMessage `json:"linked_accounts"`
	CustomMetadata json.RawMessage   `json:"custom_metadata"`
	Wallets        json.RawMessage   `json:"wallets"`
}

// parseUserInput checks a POST /v1/users body: exactly one custom_auth
// linked account (the only kind of account Cachet knows: its users sign in
// with the customer's own identity provider), optional flat custom metadata.
func parseUserInput(body []byte) (customID string, metadata []byte, err error) {
	var in userInput
	if err := DecodeBody(body, &in); err != nil {
		return "", nil, err
	}
	if len(in.Wallets) > 0 && string(in.Wallets) != "null" {
		return "", nil, errorf(Invalid, "wallets: Cachet does not create wallets with a user; create them with POST /v1/wallets and owner {user_id}.")
	}
	if len(in.LinkedAccounts) != 1 {
		return "", nil, errorf(Invalid, "linked_accounts: exactly one account of type custom_auth is required (got %d).", len(in.LinkedAccounts))
	}
	// The type decides which fields the account may have: look at it first,
	// so that another kind of account is named as such.
	var head map[string]json.RawMessage
	if err := decodeAt(in.LinkedAccounts[0], "linked_accounts[0]", &head); err != nil || head == nil {
		return "", nil, errorf(Invalid, "linked_accounts[0]: must be a JSON object.")
	}
	if t := head["type"]; t != nil && string(t) != `"custom_auth"` {
		return "", nil, errorf(Invalid, "linked_accounts[0].type: only \"custom_auth\" accounts are supported; Cachet's users sign in with the app's own identity provider.")
	}
	var la linkedAccountInput
	if err := decodeAt(in.LinkedAccounts[0], "linked_accounts[0]", &la); err != nil {
		return "", nil, err
	}
	if la.Type != "custom_auth" {
		return "", nil, errorf(Invalid, "linked_accounts[0].type: required, and only \"custom_auth\" accounts are supported.")
	}
	if err := checkCustomUserID("linked_accounts[0].custom_user_id", la.CustomUserID); err != nil {
		return "", nil, err
	}
	if len(in.CustomMetadata) > 0 && string(in.CustomMetadata) != "null" {
		if metadata, err = checkMetadata(in.CustomMetadata); err != nil {
			return "", nil, err
		}
	}
	return la.CustomUserID, metadata, nil
}

func checkCustomUserID(field, id string) error {
	switch {
	case id == "":
		return errorf(Invalid, "%s: required.", field)
	case len(id) > maxCustomUserID:
		return errorf(Invalid, "%s: at most %d bytes.", field, maxCustomUserID)
	case !utf8.ValidString(id):
		return errorf(Invalid, "%s: not valid UTF-8.", field)
	}
	return nil
}

// checkMetadata accepts Privy's CustomMetadata: an object whose values are
// strings, numbers or booleans.
func checkMetadata(raw json.RawMessage) ([]byte, error) {
	if len(raw) > maxCustomMetadata {
		return nil, errorf(Invalid, "custom_metadata: at most %d bytes of JSON.", maxCustomMetadata)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errorf(Invalid, "custom_metadata: must be a JSON object.")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch m[k].(type) {
		case string, float64, bool:
		default:
			return nil, errorf(Invalid, "custom_metadata.%s: values are strings, numbers or booleans.", clip.To(k, 64))
		}
	}
	out, err := json.Marshal(m)
	return out, err
}

const userColumns = `id, custom_user_id, custom_metadata, created_at, first_verified_at, latest_verified_at`

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var la LinkedAccount
	var meta sql.NullString
	var created int64
	var first, latest sql.NullInt64
	if err := row.Scan(&u.ID, &la.CustomUserID, &meta, &created, &first, &latest); err != nil {
		return User{}, err
	}
	u.CreatedAt = created / 1000
	la.Type, la.VerifiedAt = "custom_auth", created/1000
	if first.Valid {
		v := first.Int64 / 1000
		la.FirstVerifiedAt = &v
	}
	if latest.Valid {
		v := latest.Int64 / 1000
		la.LatestVerifiedAt = &v
	}
	u.LinkedAccounts = []LinkedAccount{la}
	u.MFAMethods = []struct{}{}
	if meta.Valid {
		u.CustomMetadata = json.RawMessage(meta.String)
	}
	return u, nil
}

func loadUser(ctx context.Context, q querier, app, id string) (User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, app))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, errorf(NotFound, "User %q not found.", id)
	}
	if err != nil {
		return User{}, fmt.Errorf("read user %s: %w", id, err)
	}
	return u, nil
}

func userByCustomID(ctx context.Context, q querier, app, customID string) (User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE app_id = ? AND custom_user_id = ? AND deleted_at IS NULL`, app, customID))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, errorf(NotFound, "No user of this app has custom_user_id %q.", clip.To(customID, 64))
	}
	if err != nil {
		return User{}, fmt.Errorf("read user by custom id: %w", err)
	}
	return u, nil
}

// CreateUser is POST /v1/users: the app's credentials alone.
func (s *Service) CreateUser(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	customID, meta, err := parseUserInput(body)
	if err != nil {
		return nil, err
	}
	id := userIDPrefix + newID()
	return s.commit(ctx, action{
		call: c, name: "user.create", target: id,
		detail: map[string]any{"custom_user_id": customID},
		response: func(tx *store.Tx) (any, error) {
			var metaArg any
			if meta != nil {
				metaArg = string(meta)
			}
			_, err := tx.Exec(`INSERT INTO users(id, app_id, custom_user_id, custom_metadata, created_at) VALUES (?, ?, ?, ?, ?)`,
				id, c.App, customID, metaArg, s.nowMS())
			if store.IsConstraint(err) {
				return nil, errorf(Conflict, "A user with custom_user_id %q already exists.", clip.To(customID, 64))
			}
			if err != nil {
				return nil, fmt.Errorf("insert user: %w", err)
			}
			return loadUser(ctx, txq{tx}, c.App, id)
		},
	})
}

// GetUser is GET /v1/users/{id}.
func (s *Service) GetUser(ctx context.Context, app, id string) (User, error) {
	return loadUser(ctx, s.st, app, id)
}

// UserByCustomID is POST /v1/users/custom_auth/id.
func (s *Service) UserByCustomID(ctx context.Context, app string, body []byte) (User, error) {
	var in struct {
		CustomUserID string `json:"custom_user_id"`
	}
	if err := DecodeBody(body, &in); err != nil {
		return User{}, err
	}
	if err := checkCustomUserID("custom_user_id", in.CustomUserID); err != nil {
		return User{}, err
	}
	return userByCustomID(ctx, s.st, app, in.CustomUserID)
}

// UserPage is a page of GET /v1/users.
type UserPage struct {
	Data       []User  `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// ListUsers is GET /v1/users: the app's users in the order they were
// created; cursor is the id of the last user of the previous page.
func (s *Service) ListUsers(ctx context.Context, app, cursor string, limit int) (UserPage, error) {
	size := pageSize(limit)
	after, err := pageStart(ctx, s.st, "users", "app_id", app, cursor, "a user of this app")
	if err != nil {
		return UserPage{}, err
	}
	rows, err := s.st.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE app_id = ? AND deleted_at IS NULL AND rowid > ?
		ORDER BY rowid LIMIT ?`, app, after, size+1)
	if err != nil {
		return UserPage{}, err
	}
	defer rows.Close()
	page := UserPage{Data: []User{}}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return UserPage{}, err
		}
		page.Data = append(page.Data, u)
	}
	page.Data, page.NextCursor = pageEnd(page.Data, size, func(u User) string { return u.ID })
	return page, rows.Err()
}

// DeleteUser is DELETE /v1/users/{id}: the app's credentials alone. A user
// who still approves for something (a member of a key quorum in use) is
// not deleted: that would silently lock the wallets the user owns. The
// user's keys are revoked with it.
func (s *Service) DeleteUser(ctx context.Context, c Call, id string) (json.RawMessage, error) {
	return s.commit(ctx, action{
		call: c, name: "user.delete", target: id,
		response: func(tx *store.Tx) (any, error) {
			if _, err := loadUser(ctx, txq{tx}, c.App, id); err != nil {
				return nil, err
			}
			uses, err := s.userUses(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			if len(uses) > 0 {
				return nil, errorf(Conflict, "User %s still approves for %s; remove the user from those first.", id, strings.Join(uses, ", "))
			}
			now := s.nowMS()
			if _, err := tx.Exec(`UPDATE users SET deleted_at = ? WHERE id = ?`, now, id); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`UPDATE user_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`, now, id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		},
	})
}

// userUses lists what a user still approves for or owns: embedded wallets
// (whose shares are released only to that user), explicit key quorums that
// list the user, and whatever uses the implicit quorum of a resource the
// user owns.
func (s *Service) userUses(ctx context.Context, q querier, app, userID string) ([]string, error) {
	var out []string
	embedded, err := queryIDs(ctx, q, `SELECT id FROM embedded_wallets WHERE user_id = ? AND app_id = ? ORDER BY rowid`, userID, app)
	if err != nil {
		return nil, err
	}
	for _, id := range embedded {
		out = append(out, "embedded wallet "+id)
	}
	member := `SELECT k.id FROM key_quorum_members m JOIN key_quorums k ON k.id = m.quorum_id
		WHERE m.user_id = ? AND k.app_id = ? AND k.deleted_at IS NULL AND k.implicit = ? ORDER BY k.id`
	explicit, err := queryIDs(ctx, q, member, userID, app, 0)
	if err != nil {
		return nil, err
	}
	for _, id := range explicit {
		out = append(out, "key quorum "+id)
	}
	implicit, err := queryIDs(ctx, q, member, userID, app, 1)
	if err != nil {
		return nil, err
	}
	for _, id := range implicit {
		refs, err := s.quorumReferrers(ctx, q, id)
		if err != nil {
			return nil, err
		}
		out = append(out, refs...)
	}
	return out, nil
}

// userValid refuses user ids that are not live users of the app, for
// owners and quorum members.
func userValid(ctx context.Context, q querier, app, field, id string) error {
	if _, err := loadUser(ctx, q, app, id); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Kind == NotFound {
			return errorf(Invalid, "%s: user %q not found.", field, clip.To(id, 64))
		}
		return err
	}
	return nil
}

// userKeys returns the live keys of the users that may approve for a quorum
// (its own user members and its children's), as canonical SPKI -> user id,
// the form quorum.Verify takes. A key past its expiry, revoked, or of a
// deleted user is left out: its signature then matches no candidate and
// the request is refused.
func (s *Service) userKeys(ctx context.Context, q querier, app string, vq quorum.Quorum) (map[string]string, error) {
	users := approvingUsers(vq)
	if len(users) == 0 {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT k.public_key, k.user_id FROM user_keys k JOIN users u ON u.id = k.user_id
		WHERE k.app_id = ? AND k.expires_at > ? AND k.revoked_at IS NULL AND u.deleted_at IS NULL
		AND k.user_id IN (`+placeholders(len(users))+`)`, append([]any{app, s.nowMS()}, anys(users)...)...)
	if err != nil {
		return nil, fmt.Errorf("read user keys: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var pk, uid string
		if err := rows.Scan(&pk, &uid); err != nil {
			return nil, err
		}
		out[pk] = uid
	}
	return out, rows.Err()
}

// approvingUsers lists the users who may approve for a quorum: its own user
// members and its children's.
func approvingUsers(vq quorum.Quorum) []string {
	users := append([]string(nil), vq.UserIDs...)
	for _, c := range vq.Children {
		users = append(users, c.UserIDs...)
	}
	return users
}

// placeholders is the "?, ?, ?" of an IN list of n values.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
