package jwtauth

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestJWKSFileRotation rewrites the JWKS file under a running verifier.
func TestJWKSFileRotation(t *testing.T) {
	k := keys()
	path := writeJWKSFile(t, jwk(pub(k.ec), kidEC, "", ""))
	cfg := baseConfig()
	cfg.JWKSFile = path
	log, logs := newLogger()
	v := mustNew(t, cfg, Options{Now: func() time.Time { return t0 }, Logger: log})
	ctx := context.Background()
	oldToken := sign(t, jose.ES256, k.ec, kidEC, claims(), nil)
	newToken := sign(t, jose.ES256, k.ec2, kidEC2, claims(), nil)
	mtime := time.Now()
	rewrite := func(data []byte) {
		t.Helper()
		writeFile(t, path, data)
		// Bump the mtime explicitly: a rewrite within the filesystem's
		// timestamp granularity, with the same size, would go unseen.
		mtime = mtime.Add(time.Hour)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		name    string
		change  func()
		token   string
		check   Check  // "" = accepted
		reason  string // substring of the rejection
		logWant string // substring the log must have gained
	}{
		{name: "initial key", token: oldToken},
		{name: "new key unknown before rotation", token: newToken, check: CheckKey, reason: `no key with kid "ec-2"`},
		{name: "rotation picked up", change: func() {
			// Same length as before: only the mtime tells the change.
			rewrite(jwksJSON(t, jwk(pub(k.ec2), kidEC2, "", "")))
		}, token: newToken, logWant: "JWKS file reloaded"},
		{name: "old key gone", token: oldToken, check: CheckKey, reason: `no key with kid "ec-1"`},
		{name: "broken file keeps last good set", change: func() { rewrite([]byte(`{"keys": [`)) },
			token: newToken, logWant: "keeping the last good key set"},
		{name: "set without usable keys keeps last good set", change: func() {
			rewrite(jwksJSON(t, jwk(pub(k.rsaWeak), kidWeak, "", "")))
		}, token: newToken, logWant: "no usable signing key"},
		{name: "both keys", change: func() {
			rewrite(jwksJSON(t, jwk(pub(k.ec), kidEC, "", ""), jwk(pub(k.ec2), kidEC2, "", "")))
		}, token: oldToken},
	}
	for _, st := range steps {
		before := len(logs.String())
		if st.change != nil {
			st.change()
		}
		_, err := v.Verify(ctx, st.token)
		if st.check == "" && err != nil {
			t.Fatalf("%s: Verify: %v", st.name, err)
		}
		if st.check != "" {
			rejection(t, err, st.check, st.reason)
		}
		if st.logWant != "" && !strings.Contains(logs.String()[before:], st.logWant) {
			t.Errorf("%s: log does not contain %q:\n%s", st.name, st.logWant, logs.String()[before:])
		}
	}

	// A broken file is parsed once per change, not once per token.
	rewrite([]byte("garbage"))
	for range 3 {
		if _, err := v.Verify(ctx, oldToken); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "JWKS file changed but cannot be used"); n != 3 {
		t.Errorf("%d warnings about broken files, want 3 (one per broken version)", n)
	}

	// A file that disappears is the verifier's problem (503), and fails closed.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(ctx, oldToken)
	if !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("Verify with the file removed: %v, want ErrKeysUnavailable", err)
	}
	if e := (*Error)(nil); errors.As(err, &e) {
		t.Errorf("unavailable keys reported as a token rejection: %v", err)
	}
	assertNoTokenLeak(t, err.Error(), oldToken)
	assertNoTokenLeak(t, logs.String(), oldToken)
}

// urlVerifier returns a verifier on srv with an injected clock.
func urlVerifier(t *testing.T, srv *jwksServer, clock *fakeClock) (*Verifier, *logBuf) {
	t.Helper()
	cfg := baseConfig()
	cfg.JWKSURL = srv.URL + "/jwks"
	log, logs := newLogger()
	return mustNew(t, cfg, Options{Now: clock.Now, Logger: log}), logs
}

func TestJWKSURL(t *testing.T) {
	k := keys()
	ctx := context.Background()
	ecToken := func() string { return sign(t, jose.ES256, k.ec, kidEC, claims(), nil) }
	ec2Token := func() string { return sign(t, jose.ES256, k.ec2, kidEC2, claims(), nil) }
	ecOnly := func() []jose.JSONWebKey { return []jose.JSONWebKey{jwk(pub(k.ec), kidEC, "", "")} }
	ec2Only := func() []jose.JSONWebKey { return []jose.JSONWebKey{jwk(pub(k.ec2), kidEC2, "", "")} }
	mustVerify := func(t *testing.T, v *Verifier, token string) {
		t.Helper()
		if _, err := v.Verify(ctx, token); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	hits := func(t *testing.T, srv *jwksServer, want int32) {
		t.Helper()
		if got := srv.hits.Load(); got != want {
			t.Errorf("JWKS requests = %d, want %d", got, want)
		}
	}

	t.Run("fetched lazily, once for many verifies, again after jwks_refresh", func(t *testing.T) {
		srv := newJWKSServer(t, standardJWKS()...)
		clock := newClock(t0)
		v, _ := urlVerifier(t, srv, clock)
		hits(t, srv, 0) // New does not fetch
		for i := range 30 {
			alg := []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}[i%3]
			mustVerify(t, v, signAs(t, alg, claims()))
			clock.Advance(time.Second)
		}
		hits(t, srv, 1)
		clock.Advance(DefaultJWKSRefresh) // past the 5 min default
		mustVerify(t, v, signAs(t, jose.ES256, claims()))
		hits(t, srv, 2)
		mustVerify(t, v, signAs(t, jose.ES256, claims()))
		hits(t, srv, 2)
	})

	t.Run("unknown kid after rotation refetches", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		clock := newClock(t0)
		v, _ := urlVerifier(t, srv, clock)
		mustVerify(t, v, ecToken())
		srv.setKeys(t, ec2Only()...)
		clock.Advance(refetchInterval)
		mustVerify(t, v, ec2Token())
		hits(t, srv, 2)
		// The old key is gone from the new set; its kid now triggers
		// nothing more than the throttle allows.
		_, err := v.Verify(ctx, ecToken())
		rejection(t, err, CheckKey, `no key with kid "ec-1"`)
		hits(t, srv, 2)
	})

	t.Run("unknown kid refetch is throttled", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		clock := newClock(t0)
		v, _ := urlVerifier(t, srv, clock)
		mustVerify(t, v, ecToken())
		hits(t, srv, 1)

		// Within 10 s of the first fetch: no refetch at all.
		clock.Advance(5 * time.Second)
		_, err := v.Verify(ctx, sign(t, jose.ES256, k.ec, "nope-1", claims(), nil))
		rejection(t, err, CheckKey, `no key with kid "nope-1"`)
		hits(t, srv, 1)

		clock.Advance(5 * time.Second) // 10 s since the fetch: one refetch
		_, err = v.Verify(ctx, sign(t, jose.ES256, k.ec, "nope-2", claims(), nil))
		rejection(t, err, CheckKey, "no key with kid")
		hits(t, srv, 2)

		// The IdP rotates, but a second unknown kid within 10 s of the
		// last fetch does not fetch again.
		srv.setKeys(t, ec2Only()...)
		clock.Advance(9 * time.Second)
		_, err = v.Verify(ctx, ec2Token())
		rejection(t, err, CheckKey, `no key with kid "ec-2"`)
		hits(t, srv, 2)
		// A known kid still verifies meanwhile.
		mustVerify(t, v, ecToken())

		clock.Advance(time.Second)
		mustVerify(t, v, ec2Token())
		hits(t, srv, 3)
	})

	t.Run("server down before any fetch", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		srv.setResponse(http.StatusServiceUnavailable, []byte("down"))
		clock := newClock(t0)
		v, logs := urlVerifier(t, srv, clock)
		token := ecToken()
		for range 3 {
			_, err := v.Verify(ctx, token)
			if !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("Verify: %v, want ErrKeysUnavailable", err)
			}
			if e := (*Error)(nil); errors.As(err, &e) {
				t.Fatalf("unavailable keys reported as a token rejection: %v", err)
			}
			if !strings.Contains(err.Error(), "503") {
				t.Errorf("error %q does not say why", err)
			}
			assertNoTokenLeak(t, err.Error(), token)
		}
		hits(t, srv, 1) // failures are retried at most every 10 s
		if !strings.Contains(logs.String(), "JWKS fetch failed") || !strings.Contains(logs.String(), srv.URL) {
			t.Errorf("log lacks the failure or the URL:\n%s", logs)
		}
		assertNoTokenLeak(t, logs.String(), token)

		// Once the IdP is back, the next try after the throttle works.
		srv.setKeys(t, ecOnly()...)
		clock.Advance(refetchInterval)
		mustVerify(t, v, token)
		hits(t, srv, 2)
	})

	t.Run("server unreachable before any fetch", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		clock := newClock(t0)
		v, _ := urlVerifier(t, srv, clock)
		srv.Close()
		_, err := v.Verify(ctx, ecToken())
		if !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("Verify: %v, want ErrKeysUnavailable", err)
		}
	})

	t.Run("server down after a good fetch keeps the last good set", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		clock := newClock(t0)
		v, logs := urlVerifier(t, srv, clock)
		mustVerify(t, v, ecToken())
		srv.setResponse(http.StatusInternalServerError, nil)
		clock.Advance(DefaultJWKSRefresh + time.Second)
		mustVerify(t, v, ecToken())
		hits(t, srv, 2)
		if !strings.Contains(logs.String(), "keeping_last_good_set=true") {
			t.Errorf("log lacks the failed refresh:\n%s", logs)
		}
		// The failed refresh is not retried on every token.
		mustVerify(t, v, ecToken())
		hits(t, srv, 2)
		srv.Close()
		clock.Advance(time.Hour - DefaultJWKSRefresh - 2*time.Second) // tokens expire in an hour
		mustVerify(t, v, ecToken())
	})

	t.Run("bad responses are failures", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			status int
			body   []byte
			want   string
		}{
			{"not found", http.StatusNotFound, nil, "404"},
			{"no content", http.StatusNoContent, nil, "204"},
			{"not JSON", http.StatusOK, []byte("<html>"), "not a JWKS document"},
			{"no usable key", http.StatusOK, jwksJSON(t, jwk(pub(k.rsaWeak), kidWeak, "", "")), "no usable signing key"},
			{"over 1 MiB", http.StatusOK, []byte(`{"keys":[],"pad":"` + strings.Repeat("a", maxKeySetBytes) + `"}`), "larger than 1048576 bytes"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				srv := newJWKSServer(t)
				srv.setResponse(tc.status, tc.body)
				v, _ := urlVerifier(t, srv, newClock(t0))
				_, err := v.Verify(ctx, ecToken())
				if !errors.Is(err, ErrKeysUnavailable) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Verify: %v, want ErrKeysUnavailable saying %q", err, tc.want)
				}
			})
		}
	})

	t.Run("concurrent verifies share one fetch", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		v, _ := urlVerifier(t, srv, newClock(t0))
		src := v.src.(*urlSource)
		entered, release := srv.block()
		defer release()
		const n = 8
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				_, err := v.Verify(ctx, ecToken())
				errs <- err
			})
		}
		<-entered
		// Wait until every other goroutine is waiting on the same fetch;
		// without single-flight they would each be in the handler instead.
		for deadline := time.Now().Add(10 * time.Second); src.joined.Load() < n-1; {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d callers joined the fetch", src.joined.Load(), n-1)
			}
			time.Sleep(time.Millisecond)
		}
		release()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		hits(t, srv, 1)
	})

	t.Run("a refresh in flight does not hold up known kids", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		clock := newClock(t0)
		v, _ := urlVerifier(t, srv, clock)
		mustVerify(t, v, ecToken())
		entered, release := srv.block()
		defer release()
		clock.Advance(DefaultJWKSRefresh)
		refresher := make(chan error, 1)
		go func() {
			_, err := v.Verify(ctx, ecToken()) // starts the refresh and waits for it
			refresher <- err
		}()
		<-entered
		other := make(chan error, 1)
		go func() {
			_, err := v.Verify(ctx, ecToken())
			other <- err
		}()
		select {
		case err := <-other:
			if err != nil {
				t.Errorf("Verify during refresh: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Verify of a known kid waited for the refresh")
		}
		release()
		if err := <-refresher; err != nil {
			t.Errorf("Verify that triggered the refresh: %v", err)
		}
		hits(t, srv, 2)
	})

	t.Run("caller giving up does not fail the fetch", func(t *testing.T) {
		srv := newJWKSServer(t, ecOnly()...)
		v, _ := urlVerifier(t, srv, newClock(t0))
		entered, release := srv.block()
		defer release()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := v.Verify(cctx, ecToken())
			done <- err
		}()
		<-entered
		cancel()
		err := <-done
		if !errors.Is(err, ErrKeysUnavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("Verify with a canceled context: %v", err)
		}
		release()
		mustVerify(t, v, ecToken()) // joins or reuses the detached fetch
		hits(t, srv, 1)
	})
}
