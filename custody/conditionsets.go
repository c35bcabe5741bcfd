package custody

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/store"
)

// Limits from Privy's schema for condition sets.
const (
	maxSetName       = 100
	maxItemsPerWrite = 100
	maxItemValue     = 1024
)

// ConditionSet is a condition set as the API shows it.
type ConditionSet struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	OwnerID   *string `json:"owner_id"`
	CreatedAt int64   `json:"created_at"`
}

// ConditionSetItem is one value of a condition set.
type ConditionSetItem struct {
	ID             string `json:"id"`
	ConditionSetID string `json:"condition_set_id"`
	Value          string `json:"value"`
	CreatedAt      int64  `json:"created_at"`
}

// ConditionSetInput is the body of POST and PATCH /v1/condition_sets.
type ConditionSetInput struct {
	Name    *string `json:"name"`
	Owner   *Owner  `json:"owner"`
	OwnerID *string `json:"owner_id"`
}

func loadConditionSet(ctx context.Context, q querier, app, id string) (*ConditionSet, error) {
	var cs ConditionSet
	var owner sql.NullString
	err := q.QueryRowContext(ctx, `SELECT id, name, owner_id, created_at FROM condition_sets WHERE id = ? AND app_id = ? AND deleted_at IS NULL`,
		id, app).Scan(&cs.ID, &cs.Name, &owner, &cs.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Condition set %q not found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read condition set %s: %w", id, err)
	}
	if owner.Valid {
		cs.OwnerID = &owner.String
	}
	return &cs, nil
}

func checkSetName(name string) error {
	if n := utf8.RuneCountInString(name); n < 1 || n > maxSetName {
		return errorf(Invalid, "name: 1 to %d characters.", maxSetName)
	}
	return nil
}

// CreateConditionSet is POST /v1/condition_sets: exactly one of owner and
// owner_id, as Privy requires.
func (s *Service) CreateConditionSet(ctx context.Context, c Call, in ConditionSetInput) (json.RawMessage, error) {
	if in.Name == nil {
		return nil, errorf(Invalid, "name: required.")
	}
	if err := checkSetName(*in.Name); err != nil {
		return nil, err
	}
	if (in.Owner == nil) == (in.OwnerID == nil) {
		return nil, errorf(Invalid, "Give exactly one of owner and owner_id.")
	}
	id := newID()
	return s.commit(ctx, action{call: c, name: "condition_set.create", target: id,
		response: func(tx *store.Tx) (any, error) {
			owner, err := s.resolveOwner(ctx, tx, c.App, in.Owner, in.OwnerID)
			if err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`INSERT INTO condition_sets(id, app_id, name, owner_id, created_at) VALUES (?, ?, ?, ?, ?)`,
				id, c.App, *in.Name, nullable(owner), s.nowMS()); err != nil {
				return nil, fmt.Errorf("insert condition set: %w", err)
			}
			return loadConditionSet(ctx, txq{tx}, c.App, id)
		}})
}

// GetConditionSet is GET /v1/condition_sets/{id}.
func (s *Service) GetConditionSet(ctx context.Context, app, id string) (*ConditionSet, error) {
	return loadConditionSet(ctx, s.st, app, id)
}

// ownedSet loads a condition set and checks its owner approved the request.
// Called first with the reader pool (verifying), then in the write
// transaction (checking the approval is unchanged); see authorizeOwner.
func (s *Service) ownedSet(ctx context.Context, q querier, c Call, id string) (*ConditionSet, error) {
	cs, err := loadConditionSet(ctx, q, c.App, id)
	if err != nil {
		return nil, err
	}
	owner := ""
	if cs.OwnerID != nil {
		owner = *cs.OwnerID
	}
	return cs, s.authorizeOwner(ctx, q, c.App, owner, c.Signed, "condition set "+id)
}

// UpdateConditionSet is PATCH /v1/condition_sets/{id}: its owner's
// threshold.
func (s *Service) UpdateConditionSet(ctx context.Context, c Call, id string, in ConditionSetInput) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedSet(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	if in.Owner != nil && in.OwnerID != nil {
		return nil, errorf(Invalid, "owner and owner_id are mutually exclusive.")
	}
	return s.commit(ctx, action{call: c, name: "condition_set.update", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedSet(ctx, txq{tx}, c, id); err != nil {
				return nil, err
			}
			if in.Name != nil {
				if err := checkSetName(*in.Name); err != nil {
					return nil, err
				}
				if _, err := tx.Exec(`UPDATE condition_sets SET name = ?, version = version + 1 WHERE id = ?`, *in.Name, id); err != nil {
					return nil, err
				}
			}
			if in.Owner != nil || in.OwnerID != nil {
				owner, err := s.resolveOwner(ctx, tx, c.App, in.Owner, in.OwnerID)
				if err != nil {
					return nil, err
				}
				if _, err := tx.Exec(`UPDATE condition_sets SET owner_id = ?, version = version + 1 WHERE id = ?`, nullable(owner), id); err != nil {
					return nil, err
				}
			}
			return loadConditionSet(ctx, txq{tx}, c.App, id)
		}})
}

// DeleteConditionSet is DELETE /v1/condition_sets/{id}: its owner's
// threshold. Policies that name it then fail closed: an ALLOW condition on a
// deleted set fails, a DENY one matches.
func (s *Service) DeleteConditionSet(ctx context.Context, c Call, id string) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedSet(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{call: c, name: "condition_set.delete", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedSet(ctx, txq{tx}, c, id); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`UPDATE condition_sets SET deleted_at = ?, version = version + 1 WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		}})
}

// ParseItems reads the body of POST and PUT .../condition_set_items: an
// array of {value} (or {"items": [...]}).
func ParseItems(body []byte) ([]string, error) {
	var items []struct {
		Value *string `json:"value"`
	}
	if err := checkValue(body); err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var wrapped struct {
			Items json.RawMessage `json:"items"`
		}
		if err := decodeAt(body, "", &wrapped); err != nil {
			return nil, err
		}
		if err := decodeAt(wrapped.Items, "items", &items); err != nil {
			return nil, err
		}
	} else if err := decodeAt(body, "", &items); err != nil {
		return nil, err
	}
	if items == nil {
		return nil, errorf(Invalid, "The body must be an array of {\"value\": ...}.")
	}
	if len(items) > maxItemsPerWrite {
		return nil, errorf(Invalid, "At most %d items per request.", maxItemsPerWrite)
	}
	out := make([]string, len(items))
	for i, it := range items {
		if it.Value == nil || *it.Value == "" || len(*it.Value) > maxItemValue {
			return nil, errorf(Invalid, "[%d].value: a string of 1 to %d bytes.", i, maxItemValue)
		}
		out[i] = *it.Value
	}
	return out, nil
}

// AddItems is POST (replace=false) and PUT (replace=true)
// .../condition_set_items: the set owner's threshold.
func (s *Service) AddItems(ctx context.Context, c Call, id string, values []string, replace bool) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedSet(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	name := "condition_set.items.append"
	if replace {
		name = "condition_set.items.replace"
	}
	return s.commit(ctx, action{call: c, name: name, target: id, replay: true,
		detail: map[string]any{"items": len(values)},
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedSet(ctx, txq{tx}, c, id); err != nil {
				return nil, err
			}
			if replace {
				if _, err := tx.Exec(`DELETE FROM condition_set_items WHERE set_id = ?`, id); err != nil {
					return nil, err
				}
			}
			out := make([]ConditionSetItem, 0, len(values))
			now := s.nowMS()
			for _, v := range values {
				it := ConditionSetItem{ID: newID(), ConditionSetID: id, Value: v, CreatedAt: now}
				if _, err := tx.Exec(`INSERT INTO condition_set_items(id, set_id, value, norm, created_at) VALUES (?, ?, ?, ?, ?)`,
					it.ID, id, v, strings.ToLower(v), now); err != nil {
					return nil, err
				}
				out = append(out, it)
			}
			if _, err := tx.Exec(`UPDATE condition_sets SET version = version + 1 WHERE id = ?`, id); err != nil {
				return nil, err
			}
			return out, nil
		}})
}

// DeleteItem is DELETE .../condition_set_items/{item_id}: the set owner's
// threshold.
func (s *Service) DeleteItem(ctx context.Context, c Call, id, itemID string) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedSet(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{call: c, name: "condition_set.items.delete", target: id + "/" + itemID, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedSet(ctx, txq{tx}, c, id); err != nil {
				return nil, err
			}
			res, err := tx.Exec(`DELETE FROM condition_set_items WHERE id = ? AND set_id = ?`, itemID, id)
			if err != nil {
				return nil, err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil, errorf(NotFound, "Item %q of condition set %s not found.", itemID, id)
			}
			if _, err := tx.Exec(`UPDATE condition_sets SET version = version + 1 WHERE id = ?`, id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		}})
}

// ItemPage is a page of GET .../condition_set_items.
type ItemPage struct {
	Items      []ConditionSetItem `json:"items"`
	NextCursor *string            `json:"next_cursor"`
}

// ListItems is GET .../condition_set_items, in the order they were added.
func (s *Service) ListItems(ctx context.Context, app, id, cursor string, limit int) (ItemPage, error) {
	if _, err := loadConditionSet(ctx, s.st, app, id); err != nil {
		return ItemPage{}, err
	}
	size := pageSize(limit)
	after, err := pageStart(ctx, s.st, "condition_set_items", "set_id", id, cursor, "an item of this condition set")
	if err != nil {
		return ItemPage{}, err
	}
	rows, err := s.st.QueryContext(ctx, `SELECT id, value, created_at FROM condition_set_items WHERE set_id = ? AND rowid > ? ORDER BY rowid LIMIT ?`,
		id, after, size+1)
	if err != nil {
		return ItemPage{}, err
	}
	defer rows.Close()
	page := ItemPage{Items: []ConditionSetItem{}}
	for rows.Next() {
		it := ConditionSetItem{ConditionSetID: id}
		if err := rows.Scan(&it.ID, &it.Value, &it.CreatedAt); err != nil {
			return ItemPage{}, err
		}
		page.Items = append(page.Items, it)
	}
	page.Items, page.NextCursor = pageEnd(page.Items, size, func(it ConditionSetItem) string { return it.ID })
	return page, rows.Err()
}
