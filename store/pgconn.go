package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5/stdlib"
)

// pgConnector opens pgx connections (through pgx's database/sql adapter)
// that accept the SQLite dialect the code above the store writes: each
// statement is rewritten once to PostgreSQL's (dialect.go) and the result
// cached, so callers keep one *sql.DB API for both stores.
type pgConnector struct {
	inner driver.Connector
	cache *sync.Map // SQLite text -> PostgreSQL text; statements are code constants, so it stays small
}

func newPGConnector(inner driver.Connector) *pgConnector {
	return &pgConnector{inner: inner, cache: &sync.Map{}}
}

func (c *pgConnector) translate(q string) string {
	if v, ok := c.cache.Load(q); ok {
		return v.(string)
	}
	t := rewrite(q)
	c.cache.Store(q, t)
	return t
}

// Connect implements driver.Connector.
func (c *pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	pc, ok := conn.(*stdlib.Conn)
	if !ok {
		conn.Close()
		return nil, errors.New("store: the pgx connector returned an unexpected connection type")
	}
	return &pgConn{Conn: pc, c: c}, nil
}

// Driver implements driver.Connector.
func (c *pgConnector) Driver() driver.Driver { return c.inner.Driver() }

// pgConn is a pgx connection whose statements are rewritten on the way in.
// The embedded *stdlib.Conn supplies everything else (transactions,
// CheckNamedValue, ResetSession, Ping).
type pgConn struct {
	*stdlib.Conn
	c *pgConnector
}

var (
	_ driver.ConnPrepareContext = (*pgConn)(nil)
	_ driver.ExecerContext      = (*pgConn)(nil)
	_ driver.QueryerContext     = (*pgConn)(nil)
	_ driver.ConnBeginTx        = (*pgConn)(nil)
	_ driver.NamedValueChecker  = (*pgConn)(nil)
	_ driver.SessionResetter    = (*pgConn)(nil)
	_ driver.Pinger             = (*pgConn)(nil)
)

// Prepare implements driver.Conn.
func (p *pgConn) Prepare(query string) (driver.Stmt, error) {
	return p.Conn.PrepareContext(context.Background(), p.c.translate(query))
}

// PrepareContext implements driver.ConnPrepareContext.
func (p *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return p.Conn.PrepareContext(ctx, p.c.translate(query))
}

// ExecContext implements driver.ExecerContext.
func (p *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return p.Conn.ExecContext(ctx, p.c.translate(query), args)
}

// QueryContext implements driver.QueryerContext.
func (p *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return p.Conn.QueryContext(ctx, p.c.translate(query), args)
}
