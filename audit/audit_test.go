package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// softSigner is an in-memory audit key: enough to test the chain logic above
// the backend. The hardware backends' signing is tested in hsm and tpm, and
// checkpoints signed by real hardware are verified in the ceremony and CLI
// tests.
type softSigner struct{ k *ecdsa.PrivateKey }

func newSoftSigner(t testing.TB) *softSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &softSigner{k}
}

func (s *softSigner) AuthKey(context.Context, string) (*ecdsa.PublicKey, error) {
	return &s.k.PublicKey, nil
}

func (s *softSigner) SignAuth(_ context.Context, _ string, d []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.k, d)
}

func newLog(t testing.TB) (*Log, *store.Store, *softSigner) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "cachet.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sg := newSoftSigner(t)
	return New(st, sg, Options{}), st, sg
}

func fill(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := l.Record(context.Background(), Entry{
			Actor: "uid=1000", Action: "test.write", Target: fmt.Sprintf("obj-%d", i), Decision: DecisionAllow,
			RequestDigest: Digest([]byte{byte(i)}), Detail: `{"i":` + fmt.Sprint(i) + `}`,
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// raw opens the database file read-write behind the store's back, as an
// attacker with the file would.
func raw(t *testing.T, st *store.Store) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+st.Path()+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestVerifyIntactLog(t *testing.T) {
	l, st, sg := newLog(t)
	rep, err := Verify(context.Background(), st.DB(), &sg.k.PublicKey)
	if err != nil || rep.Records != 0 {
		t.Fatalf("empty log: %+v %v", rep, err)
	}
	fill(t, l, 10)
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A second checkpoint with nothing new is a no-op.
	if seq, err := l.Checkpoint(context.Background()); err != nil || seq != 0 {
		t.Fatalf("idle checkpoint = %d, %v", seq, err)
	}
	fill(t, l, 5)
	rep, err = Verify(context.Background(), st.DB(), &sg.k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Records: 16, Checkpoints: 1, HeadSeq: 16, LastCheckSeq: 11, Unsigned: 5, HeadHash: rep.HeadHash}
	if rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	h, err := ReadHead(context.Background(), st.DB())
	if err != nil || h.Seq != 16 || h.CheckpointSeq != 11 || h.UncheckpointedN != 5 {
		t.Fatalf("head %+v %v", h, err)
	}
}

func TestVerifyNamesFirstBadRecord(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, db *sql.DB)
		wantSeq uint64
	}{
		{"edited actor", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET actor = 'uid=0' WHERE seq = 4`)
		}, 4},
		{"edited decision", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET decision = 'deny' WHERE seq = 7`)
		}, 7},
		{"edited timestamp", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET ts = ts + 1 WHERE seq = 2`)
		}, 2},
		{"deleted record", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_records WHERE seq = 5`)
		}, 5},
		{"deleted first record", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_records WHERE seq = 1`)
		}, 1},
		{"reordered records", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET seq = -1 WHERE seq = 6`)
			mustExec(t, db, `UPDATE audit_records SET seq = 6 WHERE seq = 3`)
			mustExec(t, db, `UPDATE audit_records SET seq = 3 WHERE seq = -1`)
		}, 3},
		{"deleted checkpoint", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_records WHERE action = ?`, ActionCheckpoint)
		}, 9},
		{"edited checkpoint signature", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET detail = replace(detail, '"signature":"M', '"signature":"N') WHERE action = ?`, ActionCheckpoint)
		}, 9},
		// A forger who rewrites a covered record and recomputes every hash
		// after it keeps the chain consistent, but the checkpoint signature
		// no longer matches.
		{"rewritten history with recomputed hashes", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_records SET target = 'forged' WHERE seq = 2`)
			rehash(t, db)
		}, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, st, sg := newLog(t)
			fill(t, l, 8)
			if seq, err := l.Checkpoint(context.Background()); err != nil || seq != 9 {
				t.Fatalf("checkpoint = %d, %v", seq, err)
			}
			fill(t, l, 3)
			tc.tamper(t, raw(t, st))
			_, err := Verify(context.Background(), st.DB(), &sg.k.PublicKey)
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("Verify = %v, want a *ChainError", err)
			}
			if ce.Seq != tc.wantSeq {
				t.Fatalf("first bad record %d (%s), want %d", ce.Seq, ce.Reason, tc.wantSeq)
			}
		})
	}
}

// rehash recomputes every prev_hash and hash, as a forger who knows the
// format would.
func rehash(t *testing.T, db *sql.DB) {
	rows, err := db.Query(`SELECT seq, ts, actor, action, target, decision, request_digest, result_digest, detail FROM audit_records ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		seq uint64
		ts  int64
		e   Entry
	}
	var rs []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.ts, &r.e.Actor, &r.e.Action, &r.e.Target, &r.e.Decision, &r.e.RequestDigest, &r.e.ResultDigest, &r.e.Detail); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	rows.Close()
	prev := zeroHash
	for _, r := range rs {
		h := chainHash(r.seq, r.ts, &r.e, prev)
		mustExec(t, db, `UPDATE audit_records SET prev_hash = ?, hash = ? WHERE seq = ?`, prev, h, r.seq)
		prev = h
	}
}

func TestCheckpointByAnotherKeyFails(t *testing.T) {
	l, st, _ := newLog(t)
	fill(t, l, 3)
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	other := newSoftSigner(t)
	_, err := Verify(context.Background(), st.DB(), &other.k.PublicKey)
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != 4 {
		t.Fatalf("Verify with another key = %v, want ChainError at 4", err)
	}
}

func TestConcurrentAppendsStayContiguous(t *testing.T) {
	l, st, sg := newLog(t)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := l.Record(context.Background(), Entry{Actor: fmt.Sprint(w), Action: "t", Decision: DecisionAllow}); err != nil {
					t.Error(err)
				}
				if i == 10 && w%4 == 0 {
					if _, err := l.Checkpoint(context.Background()); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	rep, err := Verify(context.Background(), st.DB(), &sg.k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records-rep.Checkpoints != 16*25 || rep.Checkpoints == 0 {
		t.Fatalf("report %+v", rep)
	}
}

// An append inside a write that fails is rolled back with it: no record of
// something that did not happen, and no gap either.
func TestAppendRollsBackWithItsWrite(t *testing.T) {
	l, st, sg := newLog(t)
	fill(t, l, 2)
	boom := errors.New("boom")
	err := st.Write(context.Background(), func(tx *store.Tx) error {
		if _, err := Append(tx, Entry{Actor: "a", Action: "x", Decision: DecisionAllow}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	fill(t, l, 1)
	rep, err := Verify(context.Background(), st.DB(), &sg.k.PublicKey)
	if err != nil || rep.Records != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, err := l.Record(context.Background(), Entry{Actor: "a", Action: "x", Decision: "maybe"}); err == nil {
		t.Fatal("an entry with an unknown decision was recorded")
	}
}

func TestRunCheckpointsByCount(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sg := newSoftSigner(t)
	l := New(st, sg, Options{CheckpointEvery: 5, CheckpointInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	fill(t, l, 5)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, _ := ReadHead(context.Background(), st.DB())
		if h.CheckpointSeq == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 5 records: %+v", h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fill(t, l, 1)
	cancel()
	<-done
	h, _ := ReadHead(context.Background(), st.DB())
	if h.Seq != 8 || h.CheckpointSeq != 8 {
		t.Fatalf("after shutdown %+v, want a final checkpoint at 8", h)
	}
}

// fakeBackend is an in-memory keys.Backend for testing the decorator's logic.
type fakeBackend struct {
	keys.Backend
	sg *softSigner
}

func (f fakeBackend) SignAuth(ctx context.Context, l string, d []byte) ([]byte, error) {
	return f.sg.SignAuth(ctx, l, d)
}

func (f fakeBackend) Unseal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	return []byte("plaintext secret"), nil
}

func TestAuditedBackendFailsClosed(t *testing.T) {
	l, st, sg := newLog(t)
	b := Backend(fakeBackend{sg: sg}, l)
	ctx := WithActor(context.Background(), "uid=1000 app=app_1")
	digest := Digest([]byte("req"))
	if _, err := b.SignAuth(ctx, "auth/k1", digest); err != nil {
		t.Fatal(err)
	}
	var actor, action, target string
	if err := st.DB().QueryRow(`SELECT actor, action, target FROM audit_records WHERE seq = 1`).Scan(&actor, &action, &target); err != nil {
		t.Fatal(err)
	}
	if actor != "uid=1000 app=app_1" || action != ActionKeySign || target != "auth/k1" {
		t.Fatalf("record = %s %s %s", actor, action, target)
	}
	st.Close()
	if sig, err := b.SignAuth(ctx, "auth/k1", digest); err == nil || sig != nil {
		t.Fatalf("with the store closed, SignAuth released %x, %v", sig, err)
	}
	if pt, err := b.Unseal(ctx, keys.PurposeWallet, nil, nil); err == nil || pt != nil {
		t.Fatalf("with the store closed, Unseal released %q, %v", pt, err)
	}
}

func TestVerifyTail(t *testing.T) {
	l, st, sg := newLog(t)
	fill(t, l, 4)
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 3)
	rep, err := VerifyTail(context.Background(), st.DB(), &sg.k.PublicKey)
	if err != nil || rep.LastCheckSeq != 5 || rep.HeadSeq != 8 || rep.Unsigned != 3 {
		t.Fatalf("tail %+v %v", rep, err)
	}
	db := raw(t, st)
	mustExec(t, db, `UPDATE audit_records SET target = 'x' WHERE seq = 7`)
	var ce *ChainError
	if _, err := VerifyTail(context.Background(), st.DB(), &sg.k.PublicKey); !errors.As(err, &ce) || ce.Seq != 7 {
		t.Fatalf("edited tail: %v", err)
	}
	mustExec(t, db, `UPDATE audit_records SET detail = replace(detail, '"signature":"M', '"signature":"N') WHERE seq = 5`)
	if _, err := VerifyTail(context.Background(), st.DB(), &sg.k.PublicKey); !errors.As(err, &ce) || ce.Seq != 5 {
		t.Fatalf("edited checkpoint: %v", err)
	}
}
