package custody

import (
	"context"
	"database/sql"
	"errors"
)

// maxPage is the largest page a list returns, and the size of a page when
// the caller names none.
const maxPage = 100

// pageSize clamps a requested page size to 1..maxPage.
func pageSize(limit int) int {
	if limit <= 0 || limit > maxPage {
		return maxPage
	}
	return limit
}

// pageStart is the rowid a page starts after: 0 without a cursor. Lists are
// in rowid order, which is creation order even for rows created within the
// same millisecond. The cursor is the id of the last row of the previous
// page and must be a row of table whose scopeCol is scope; anything else is
// refused as not "a <noun>".
func pageStart(ctx context.Context, q querier, table, scopeCol, scope, cursor, noun string) (int64, error) {
	if cursor == "" {
		return 0, nil
	}
	var row int64
	err := q.QueryRowContext(ctx, `SELECT rowid FROM `+table+` WHERE id = ? AND `+scopeCol+` = ?`, cursor, scope).Scan(&row)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, errorf(Invalid, "cursor: not %s.", noun)
	}
	return row, err
}

// pageEnd trims the one row past the page that a list query asks for
// (LIMIT size+1) and returns the cursor of the next page, nil on the last.
func pageEnd[T any](items []T, size int, id func(T) string) ([]T, *string) {
	if len(items) <= size {
		return items, nil
	}
	items = items[:size]
	next := id(items[size-1])
	return items, &next
}
