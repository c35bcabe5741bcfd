package health

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

func healthy() *Monitor {
	m := New(nil)
	for _, p := range Parts {
		m.Set(p, nil)
	}
	return m
}

func TestMonitorStartsFailing(t *testing.T) {
	if err := New(nil).Err(); err == nil {
		t.Fatal("a new monitor releases before any part was proved")
	}
}

func TestErrNamesThePart(t *testing.T) {
	var liveErr error
	for _, tc := range []struct {
		name string
		set  map[Part]error
		live error
		want Part
	}{
		{name: "healthy"},
		{name: "backend", set: map[Part]error{Backend: errors.New("gone")}, want: Backend},
		{name: "record", set: map[Part]error{Record: errors.New("no checkpoint")}, want: Record},
		{name: "store and record: store first", set: map[Part]error{Store: errors.New("full"), Record: errors.New("x")}, want: Store},
		{name: "live store check", live: errors.New("files replaced"), want: Store},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := healthy()
			m.Live(Store, func() error { return liveErr })
			liveErr = tc.live
			for p, err := range tc.set {
				m.Set(p, err)
			}
			err := m.Err()
			var ue *UnavailableError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Err = %v, want nil", err)
			case tc.want != "" && (!errors.As(err, &ue) || ue.Part != tc.want || !errors.Is(err, keys.ErrUnavailable)):
				t.Fatalf("Err = %v, want part %s matching keys.ErrUnavailable", err, tc.want)
			}
			if tc.want != "" && m.States()[tc.want].OK {
				t.Fatalf("States reports %s ok", tc.want)
			}
		})
	}
}

// A probe that hangs fails its part once it is older than the timeout,
// while it is still stuck.
func TestWatchHungProbe(t *testing.T) {
	m := New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	calls := 0
	go m.Watch(ctx, Backend, 5*time.Millisecond, 50*time.Millisecond, func(context.Context) error {
		calls++
		if calls == 1 {
			return nil
		}
		<-release
		return nil
	})
	waitFor(t, func() bool { return m.PartErr(Backend) == nil })
	waitFor(t, func() bool { return m.PartErr(Backend) != nil })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// stubBackend records whether the gate let a call through.
type stubBackend struct {
	keys.Backend
	calls   int
	onCall  func()
	payload []byte
}

func (s *stubBackend) Unseal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	s.calls++
	if s.onCall != nil {
		s.onCall()
	}
	s.payload = []byte("wallet key")
	return s.payload, nil
}

func (s *stubBackend) SignAuth(context.Context, string, []byte) ([]byte, error) {
	s.calls++
	if s.onCall != nil {
		s.onCall()
	}
	return []byte("sig"), nil
}

func (s *stubBackend) AuthKey(context.Context, string) (*ecdsa.PublicKey, error) {
	s.calls++
	return nil, nil
}

// The gate refuses before the hardware is asked, and refuses (zeroing the
// plaintext) when a part failed while the operation ran.
func TestGate(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		failFirst bool
		failMid   bool
		wantCalls int
		wantErr   bool
	}{
		{name: "healthy", wantCalls: 1},
		{name: "failing before", failFirst: true, wantCalls: 0, wantErr: true},
		{name: "failing during", failMid: true, wantCalls: 1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := healthy()
			sb := &stubBackend{}
			if tc.failFirst {
				m.Set(Backend, errors.New("gone"))
			}
			if tc.failMid {
				sb.onCall = func() { m.Set(Backend, errors.New("gone")) }
			}
			g := Gate(sb, m)
			out, err := g.Unseal(ctx, keys.PurposeWallet, nil, nil)
			if sb.calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Fatalf("Unseal: %d calls, err %v", sb.calls, err)
			}
			if tc.wantErr && (out != nil || (sb.payload != nil && string(sb.payload) != "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")) {
				t.Fatalf("plaintext not zeroed: %q %q", out, sb.payload)
			}
			m2 := healthy()
			sb2 := &stubBackend{}
			if tc.failFirst {
				m2.Set(Record, errors.New("no checkpoint"))
			}
			if tc.failMid {
				sb2.onCall = func() { m2.Set(Store, errors.New("full")) }
			}
			if _, err := Gate(sb2, m2).SignAuth(ctx, "auth/x", make([]byte, 32)); (err != nil) != tc.wantErr || sb2.calls != tc.wantCalls {
				t.Fatalf("SignAuth: %d calls, err %v", sb2.calls, err)
			}
		})
	}
}
