package store

import (
	"strconv"
	"strings"
)

// The code above the store writes its SQL once, in SQLite's dialect with `?`
// placeholders. On PostgreSQL each statement is rewritten once (and cached,
// see pgconn.go) by the functions below. They are hand-written because no
// maintained library translates SQLite SQL to PostgreSQL: pgx expects `$n`
// placeholders, and query builders would mean rewriting every caller. The
// rewrite is deliberately narrow; it knows only the few SQLite-isms the code
// uses, and SQL that needed more was changed at its caller to a form both
// databases accept:
//
//   - `?` placeholders become `$1`, `$2`, ..., and SQLite's numbered `?NNN`
//     becomes `$NNN` (a plain `?` after it takes the next number, as in
//     SQLite)
//   - a blob literal x'ab' becomes '\xab'::bytea
//   - instr(a, b) becomes strpos(a, b)
//   - LIMIT -1 (no limit) becomes LIMIT ALL
//
// SQLite's JSON functions (json_each, json_extract) are not rewritten: the
// PostgreSQL store defines them (pgFunctions, migrate.go).
//
// Text inside string literals, quoted identifiers and comments is never
// changed.

// rewrite translates one statement from the SQLite dialect to PostgreSQL's.
func rewrite(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); {
		c := q[i]
		if j := verbatim(q, i); j > i {
			b.WriteString(q[i:j])
			i = j
			continue
		}
		switch {
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				k, _ := strconv.Atoi(q[i+1 : j])
				n = max(n, k)
				b.WriteByte('$')
				b.WriteString(q[i+1 : j])
				i = j
				continue
			}
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			i++
		case isIdentStart(c):
			j := i
			for j < len(q) && isIdent(q[j]) {
				j++
			}
			word := q[i:j]
			switch {
			case (word == "x" || word == "X") && j < len(q) && q[j] == '\'':
				k := skipQuoted(q, j)
				b.WriteString(`'\x`)
				b.WriteString(q[j+1 : k-1])
				b.WriteString(`'::bytea`)
				i = k
				continue
			case strings.EqualFold(word, "instr") && j < len(q) && q[j] == '(':
				b.WriteString("strpos")
			case strings.EqualFold(word, "LIMIT"):
				k := j
				for k < len(q) && (q[k] == ' ' || q[k] == '\t' || q[k] == '\n') {
					k++
				}
				if strings.HasPrefix(q[k:], "-1") && (k+2 == len(q) || !isIdent(q[k+2])) {
					b.WriteString(word)
					b.WriteString(" ALL")
					i = k + 2
					continue
				}
				b.WriteString(word)
			default:
				b.WriteString(word)
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// skipQuoted returns the index just past the quoted token starting at i
// (a doubled quote character stands for itself).
// verbatim returns the end of the string literal, quoted identifier or
// comment that starts at q[i], which both translations copy unchanged, or
// i when none starts there.
func verbatim(q string, i int) int {
	switch {
	case q[i] == '\'' || q[i] == '"':
		return skipQuoted(q, i)
	case strings.HasPrefix(q[i:], "--"):
		if j := strings.IndexByte(q[i:], '\n'); j >= 0 {
			return i + j
		}
		return len(q)
	case strings.HasPrefix(q[i:], "/*"):
		if j := strings.Index(q[i+2:], "*/"); j >= 0 {
			return i + 2 + j + 2
		}
		return len(q)
	}
	return i
}

func skipQuoted(q string, i int) int {
	quote := q[i]
	for j := i + 1; j < len(q); j++ {
		if q[j] == quote {
			if j+1 < len(q) && q[j+1] == quote {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(q)
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdent(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

// translateDDL turns a migration written for SQLite into PostgreSQL's
// dialect. SQLite's INTEGER is 64 bits wide, PostgreSQL's 32: every INTEGER
// becomes BIGINT; BLOB becomes BYTEA; the STRICT and WITHOUT ROWID table
// options go; INSERT OR IGNORE becomes INSERT ... ON CONFLICT DO NOTHING. Every table that has a rowid in SQLite gets one in PostgreSQL
// too, an identity column named rowid, because lists page and order by it
// (creation order); it is unique, so an index serves those queries. An index
// created with its table ends with rowid, as SQLite's indexes implicitly do,
// so that ORDER BY ..., rowid LIMIT 1 on it stays one index probe (the
// aggregation running sums depend on it). Writes
// are serialized cluster-wide (see pgconn.go), so identities are handed out
// in commit order, as SQLite's rowids are.
func translateDDL(q string) string {
	var b strings.Builder
	var words []string // the last words seen outside quotes and comments
	tableStart := -1   // position in b just after a CREATE TABLE's "("
	orIgnore := false  // the statement is an INSERT OR IGNORE
	// Tables this migration creates with a rowid, and the depth of an
	// index's column list that gets rowid appended (0: none).
	rowidTables, table := map[string]bool{}, ""
	indexDepth := 0
	for i := 0; i < len(q); {
		c := q[i]
		if j := verbatim(q, i); j > i {
			b.WriteString(q[i:j])
			i = j
			continue
		}
		switch {
		case isIdentStart(c):
			j := i
			for j < len(q) && isIdent(q[j]) {
				j++
			}
			word := q[i:j]
			i = j
			switch strings.ToUpper(word) {
			case "INTEGER":
				b.WriteString("BIGINT")
			case "BLOB":
				b.WriteString("BYTEA")
			case "STRICT":
				trimComma(&b)
			case "OR":
				// INSERT OR IGNORE: INSERT ... ON CONFLICT DO NOTHING.
				k := i
				for k < len(q) && q[k] == ' ' {
					k++
				}
				if len(words) == 1 && words[0] == "INSERT" && strings.HasPrefix(strings.ToUpper(q[k:]), "IGNORE") && (k+6 == len(q) || !isIdent(q[k+6])) {
					i = k + len("IGNORE")
					orIgnore = true
					s := strings.TrimRight(b.String(), " ")
					b.Reset()
					b.WriteString(s)
					continue
				}
				b.WriteString(word)
			case "WITHOUT":
				// WITHOUT ROWID: drop both words, and the rowid column
				// this table was given.
				k := i
				for k < len(q) && q[k] == ' ' {
					k++
				}
				if strings.HasPrefix(strings.ToUpper(q[k:]), "ROWID") {
					i = k + len("ROWID")
					trimComma(&b)
					delete(rowidTables, table)
					if tableStart >= 0 {
						s := b.String()
						b.Reset()
						b.WriteString(strings.TrimSuffix(s[:tableStart], rowidColumn))
						b.WriteString(s[tableStart:])
					}
					continue
				}
				b.WriteString(word)
			default:
				b.WriteString(word)
			}
			words = append(words, strings.ToUpper(word))
		case c == '(':
			b.WriteByte(c)
			i++
			switch {
			case indexDepth > 0:
				indexDepth++
			case createTable(words):
				b.WriteString(rowidColumn)
				tableStart = b.Len()
				table = words[len(words)-1]
				rowidTables[table] = true
			case indexOn(words, rowidTables):
				indexDepth = 1
			}
			words = append(words, "(")
		case c == ')':
			if indexDepth > 0 {
				if indexDepth--; indexDepth == 0 {
					b.WriteString(", rowid")
				}
			}
			b.WriteByte(c)
			i++
		case c == ';':
			if orIgnore {
				b.WriteString(" ON CONFLICT DO NOTHING")
			}
			b.WriteByte(c)
			i++
			words, tableStart, orIgnore = nil, -1, false
		default:
			b.WriteByte(c)
			i++
		}
	}
	if orIgnore {
		b.WriteString(" ON CONFLICT DO NOTHING")
	}
	return b.String()
}

// indexOn reports whether words, those of one statement so far, are a
// CREATE INDEX's (not a unique one's) on one of tables, before its column
// list.
func indexOn(words []string, tables map[string]bool) bool {
	n := len(words)
	if n < 5 || words[0] != "CREATE" || words[1] != "INDEX" || words[n-2] != "ON" || !tables[words[n-1]] {
		return false
	}
	for _, w := range words {
		if w == "(" {
			return false
		}
	}
	return true
}

// createTable reports whether words, those of one statement so far, are a
// CREATE TABLE's before its column list.
func createTable(words []string) bool {
	if len(words) < 3 || words[0] != "CREATE" || words[1] != "TABLE" {
		return false
	}
	for _, w := range words {
		if w == "(" {
			return false
		}
	}
	return true
}

// rowidColumn is the column translateDDL gives each table with a rowid.
const rowidColumn = "rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE, "

// trimComma removes a trailing comma (and the blanks after it) from b: the
// one before a table option that was dropped.
func trimComma(b *strings.Builder) {
	s := b.String()
	t := strings.TrimRight(s, " \t\n")
	if strings.HasSuffix(t, ",") {
		b.Reset()
		b.WriteString(t[:len(t)-1])
		b.WriteString(s[len(t):])
	}
}
