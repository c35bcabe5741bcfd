package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// refetchInterval is the least time between two fetches of a JWKS URL
	// that were not due to JWKSRefresh: a refetch for an unknown kid, or a
	// retry after a failure. Unknown kids are free for anyone to put in a
	// token, so without it a flood of them would hammer the IdP.
	refetchInterval = 10 * time.Second
	// fetchTimeout bounds one JWKS fetch, whatever client is used.
	fetchTimeout = 10 * time.Second
)

// keySource yields the key set to verify a token with.
type keySource interface {
	// keys returns the current key set for a token whose header names kid
	// (possibly ""). Errors wrap ErrKeysUnavailable.
	keys(ctx context.Context, kid string) (*keySet, error)
}

// staticSource is a PEM key, read once at New.
type staticSource struct{ set *keySet }

func (s staticSource) keys(context.Context, string) (*keySet, error) { return s.set, nil }

// fileSource is a JWKS file, re-read when its modification time or size
// changes, so that operators can rotate keys by rewriting the file without a
// restart.
type fileSource struct {
	path string
	algs []jose.SignatureAlgorithm
	log  *slog.Logger

	mu    sync.Mutex                // serialises reloads
	state atomic.Pointer[fileState] // read without the lock on every Verify
}

type fileState struct {
	set  *keySet // last good set; never nil
	mod  time.Time
	size int64
}

func (s *fileState) matches(fi os.FileInfo) bool {
	return fi.ModTime().Equal(s.mod) && fi.Size() == s.size
}

func newFileSource(path string, algs []jose.SignatureAlgorithm, log *slog.Logger) (*fileSource, error) {
	s := &fileSource{path: path, algs: algs, log: log}
	fi, data, err := s.read()
	if err != nil {
		return nil, err
	}
	set, err := parseJWKS(data, algs, log, path)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %v", path, err)
	}
	s.state.Store(&fileState{set: set, mod: fi.ModTime(), size: fi.Size()})
	return s, nil
}

// read returns the file's content and the stat of the same open file, so
// that a rename-over replacement between stat and read cannot pair one
// version's stat with another version's content.
func (s *fileSource) read() (os.FileInfo, []byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeySetBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxKeySetBytes {
		return nil, nil, fmt.Errorf("JWKS file %s is larger than %d bytes", s.path, maxKeySetBytes)
	}
	return fi, data, nil
}

func (s *fileSource) keys(context.Context, string) (*keySet, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		// Fail closed: a file we cannot see may have been replaced by an
		// operator who revoked a key; verifying with a stale set would
		// ignore that. The caller answers 503, not 401.
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	if st := s.state.Load(); st.matches(fi) {
		return st.set, nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.state.Load()
	if old.matches(fi) { // another goroutine reloaded while we waited
		return old.set, nil
	}
	fi, data, err := s.read()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	set, err := parseJWKS(data, s.algs, s.log, s.path)
	if err != nil {
		// A half-written or broken file should not lock every user out:
		// keep the last good set, and remember this version so that we
		// warn once per change rather than once per token.
		s.log.Warn("jwtauth: JWKS file changed but cannot be used; keeping the last good key set",
			"file", s.path, "error", err)
		s.state.Store(&fileState{set: old.set, mod: fi.ModTime(), size: fi.Size()})
		return old.set, nil
	}
	s.log.Info("jwtauth: JWKS file reloaded", "file", s.path, "keys", len(set.keys))
	s.state.Store(&fileState{set: set, mod: fi.ModTime(), size: fi.Size()})
	return set, nil
}

// urlSource is a JWKS endpoint. It is fetched on first use (so that an IdP
// outage does not stop the daemon from starting), reused for refresh, and
// refetched early, at most once per refetchInterval, for a kid it does not
// know (the IdP rotated its key).
//
// Fetches are single-flight: the Verify that starts a fetch waits for it, and
// so does any Verify that arrives meanwhile and cannot be served by the
// current set (there is none yet, or its kid is unknown); none starts a
// second fetch. The fetch runs detached from any one caller's context, so a
// caller that gives up does not fail the others.
type urlSource struct {
	url     string
	logURL  string // url without its password, for logs and errors
	client  *http.Client
	refresh time.Duration
	algs    []jose.SignatureAlgorithm
	now     func() time.Time
	log     *slog.Logger

	mu          sync.Mutex
	set         *keySet   // last good set; nil until a fetch succeeds
	fetchedAt   time.Time // when set was fetched
	lastAttempt time.Time // when the last fetch started, good or bad
	lastErr     error     // why the last fetch failed; nil if it succeeded
	inflight    *fetchCall

	joined atomic.Int32 // callers that waited on another's fetch; for tests
}

type fetchCall struct{ done chan struct{} }

func newURLSource(raw string, s settings, client *http.Client, now func() time.Time, log *slog.Logger) *urlSource {
	logURL := raw
	if u, err := url.Parse(raw); err == nil {
		logURL = u.Redacted()
	}
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	return &urlSource{
		url: raw, logURL: logURL, client: client, refresh: s.JWKSRefresh,
		algs: s.algs, now: now, log: log,
	}
}

func (s *urlSource) keys(ctx context.Context, kid string) (*keySet, error) {
	s.mu.Lock()
	call := s.inflight
	if call != nil {
		if s.set != nil && (kid == "" || s.set.hasKid(kid)) {
			// A refresh is running but the current set serves this
			// token; there is no reason to make it wait.
			set := s.set
			s.mu.Unlock()
			return set, nil
		}
		s.joined.Add(1)
	} else {
		now := s.now()
		reason := s.fetchReason(now, kid)
		if reason == "" {
			set, err := s.set, s.lastErr
			s.mu.Unlock()
			return s.result(set, err)
		}
		call = &fetchCall{done: make(chan struct{})}
		s.inflight = call
		s.lastAttempt = now
		go s.fetch(context.WithoutCancel(ctx), call, reason)
	}
	s.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for JWKS from %s: %w", ErrKeysUnavailable, s.logURL, ctx.Err())
	}
	s.mu.Lock()
	set, err := s.set, s.lastErr
	s.mu.Unlock()
	return s.result(set, err)
}

// result turns the source's state into what keys returns: the last good set
// if there is one (a failed refresh does not discard it), else the error.
func (s *urlSource) result(set *keySet, err error) (*keySet, error) {
	if set != nil {
		return set, nil
	}
	if err == nil {
		err = errors.New("no key set fetched yet")
	}
	return nil, fmt.Errorf("%w: JWKS URL %s: %v", ErrKeysUnavailable, s.logURL, err)
}

// fetchReason says why a fetch is needed now, or "" if it is not. Called
// with s.mu held.
func (s *urlSource) fetchReason(now time.Time, kid string) string {
	throttled := !s.lastAttempt.IsZero() && now.Before(s.lastAttempt.Add(refetchInterval))
	switch {
	case s.set == nil && s.lastErr == nil:
		return "first use"
	case s.set == nil:
		if throttled {
			return "" // the last attempt failed moments ago: fail fast
		}
		return "retry after failure"
	case throttled:
		return ""
	case !now.Before(s.fetchedAt.Add(s.refresh)):
		return "refresh interval elapsed"
	case kid != "" && !s.set.hasKid(kid):
		return "unknown kid"
	}
	return ""
}

func (s *urlSource) fetch(ctx context.Context, call *fetchCall, reason string) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := s.get(ctx)

	s.mu.Lock()
	if err == nil {
		s.set, s.fetchedAt, s.lastErr = set, s.now(), nil
	} else {
		s.lastErr = err
	}
	keeping := s.set != nil
	s.inflight = nil
	s.mu.Unlock()

	// Logged before the waiters are released, so that the log line is
	// there when a caller sees the outcome (an operator reading the log
	// after a refusal, or a test).
	if err != nil {
		// The warning names the URL but never a token: the fetch is not
		// tied to any one token.
		s.log.Warn("jwtauth: JWKS fetch failed", "url", s.logURL, "reason", reason,
			"error", err, "keeping_last_good_set", keeping)
	} else {
		s.log.Info("jwtauth: JWKS fetched", "url", s.logURL, "reason", reason, "keys", len(set.keys))
	}
	close(call.done)
}

func (s *urlSource) get(ctx context.Context) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err // net/http strips any password from the URL it quotes
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading response: %v", err)
	}
	if len(body) > maxKeySetBytes {
		return nil, fmt.Errorf("response body is larger than %d bytes", maxKeySetBytes)
	}
	return parseJWKS(body, s.algs, s.log, s.logURL)
}
