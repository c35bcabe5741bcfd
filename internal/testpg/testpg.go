// Package testpg runs a throwaway PostgreSQL server for tests: initdb and
// pg_ctl (Debian's postgresql package) in a temporary directory, listening
// only on a Unix socket inside it. Tests and CI run as root, which initdb
// refuses, so as root the server runs as the unprivileged postgres user the
// package creates. A missing PostgreSQL fails the tests: scripts/install-deps
// installs it, so its absence is a broken setup, never a reason to skip.
//
// One server serves a test package (start it in TestMain with Main); each
// test gets a fresh database from NewDatabase.
package testpg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Server is a running test PostgreSQL server.
type Server struct {
	dir string // the temporary directory: data/, sock/, log
	bin string
	uid int // the user the server runs as when we are root; -1 otherwise
	gid int
	n   atomic.Int64
}

// Bin returns the directory of PostgreSQL's server binaries: $PG_BIN, or
// the newest /usr/lib/postgresql/*/bin.
func Bin() (string, error) {
	if b := os.Getenv("PG_BIN"); b != "" {
		return b, nil
	}
	ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(ds) == 0 {
		return "", errors.New("testpg: PostgreSQL not found under /usr/lib/postgresql (run scripts/install-deps, or set PG_BIN)")
	}
	sort.Slice(ds, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(ds[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(ds[j]))))
		return vi < vj
	})
	return filepath.Dir(ds[len(ds)-1]), nil
}

// Start creates and starts a server in a new temporary directory.
func Start() (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cachet-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("testpg: running as root, and no postgres user to run the server as: %w", err)
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
	}
	if err := os.Mkdir(s.sockDir(), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if s.uid >= 0 {
		for _, p := range []string{dir, s.sockDir()} {
			if err := os.Chown(p, s.uid, s.gid); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
	}
	if out, err := s.run("initdb", "-D", s.dataDir(), "-U", "cachet", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testpg: initdb: %w\n%s", err, out)
	}
	if err := s.StartServer(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) sockDir() string { return filepath.Join(s.dir, "sock") }

// run runs one of the server's binaries, as the postgres user when we are
// root.
func (s *Server) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	if s.uid >= 0 {
		cmd = exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(s.uid), "--regid=" + strconv.Itoa(s.gid), "--clear-groups", "--",
			filepath.Join(s.bin, name)}, args...)...)
	}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd.CombinedOutput()
}

// StartServer starts the server (again, after StopServer).
func (s *Server) StartServer() error {
	opts := "-c listen_addresses='' -c unix_socket_directories='" + s.sockDir() + "' -c max_connections=200 -c shared_buffers=16MB -c fsync=on"
	if out, err := s.run("pg_ctl", "start", "-w", "-t", "60", "-D", s.dataDir(), "-l", filepath.Join(s.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("testpg: pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return nil
}

// StopServer stops the server; immediate stops it the way a crash would
// (no checkpoint; the WAL brings it back).
func (s *Server) StopServer(immediate bool) error {
	mode := "fast"
	if immediate {
		mode = "immediate"
	}
	if out, err := s.run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", s.dataDir()); err != nil {
		return fmt.Errorf("testpg: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	err := s.StopServer(false)
	os.RemoveAll(s.dir)
	return err
}

// DSN is the connection string of database name.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("host=%s port=5432 user=cachet dbname=%s sslmode=disable", s.sockDir(), name)
}

// NewDatabase creates an empty database for one test and returns its DSN.
// It is dropped when the test ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	if err := s.exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	return s.DSN(name)
}

func (s *Server) exec(stmt string) error {
	db, err := sql.Open("pgx", s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("testpg: %s: %w", stmt, err)
	}
	return nil
}

// Main starts a server for the test package, stores it in *srv, runs the
// tests and stops it. It exits with status 1, running nothing, when the
// server does not start.
func Main(m *testing.M, srv **Server) {
	s, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
