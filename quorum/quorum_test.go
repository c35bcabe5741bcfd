package quorum_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/quorum"
)

// TestSatisfied runs the whole path for each row: payload, signatures by
// some keys, Verify against the quorum's candidates, then Satisfied.
func TestSatisfied(t *testing.T) {
	k := make([]*signer, 5)
	for i := range k {
		k[i] = newSigner(t)
	}
	A, B, C, D, U := k[0], k[1], k[2], k[3], k[4] // U is user u1's user key
	userKeys := map[string]string{U.spki: "u1"}

	twoOfThree := quorum.Quorum{ID: "kq_23", Keys: []string{A.spki, B.spki, C.spki}, Threshold: 2}
	keyOrUser := quorum.Quorum{ID: "kq_ku", Keys: []string{A.spki}, UserIDs: []string{"u1"}, Threshold: 1}
	keyAndUser := quorum.Quorum{ID: "kq_kau", Keys: []string{A.spki}, UserIDs: []string{"u1"}, Threshold: 2}
	// A parent 2-of-2 of key A and a child 2-of-2 of B and C.
	nested := quorum.Quorum{ID: "kq_p", Keys: []string{A.spki}, Threshold: 2,
		Children: []quorum.Quorum{{ID: "kq_c", Keys: []string{B.spki, C.spki}, Threshold: 2}}}
	// A parent 2-of-3 of keys A, D and the same child.
	nestedWide := quorum.Quorum{ID: "kq_pw", Keys: []string{A.spki, D.spki}, Threshold: 2,
		Children: []quorum.Quorum{{ID: "kq_c", Keys: []string{B.spki, C.spki}, Threshold: 2}}}
	// Key A is in the parent and in the child (1-of-2 of A, B).
	shared := quorum.Quorum{ID: "kq_s", Keys: []string{A.spki}, Threshold: 2,
		Children: []quorum.Quorum{{ID: "kq_sc", Keys: []string{A.spki, B.spki}, Threshold: 1}}}
	// A child of users and keys.
	userChild := quorum.Quorum{ID: "kq_uc", Keys: []string{A.spki}, Threshold: 2,
		Children: []quorum.Quorum{{ID: "kq_ucc", Keys: []string{B.spki}, UserIDs: []string{"u1"}, Threshold: 2}}}

	tests := []struct {
		name    string
		q       quorum.Quorum
		signers []*signer
		want    bool
	}{
		{"2-of-3 with A and B", twoOfThree, []*signer{A, B}, true},
		{"2-of-3 with C and A", twoOfThree, []*signer{C, A}, true},
		{"2-of-3 with all three", twoOfThree, []*signer{A, B, C}, true},
		{"2-of-3 with A only", twoOfThree, []*signer{A}, false},
		{"2-of-3 with A twice", twoOfThree, []*signer{A, A}, false},
		{"2-of-3 with none", twoOfThree, nil, false},
		{"1-of-2 key or user: key", keyOrUser, []*signer{A}, true},
		{"1-of-2 key or user: user", keyOrUser, []*signer{U}, true},
		{"1-of-2 key or user: none", keyOrUser, nil, false},
		{"2-of-2 key and user: both", keyAndUser, []*signer{U, A}, true},
		{"2-of-2 key and user: user twice", keyAndUser, []*signer{U, U}, false},
		{"nested: parent key and satisfied child", nested, []*signer{A, B, C}, true},
		{"nested: child satisfied counts only once", nested, []*signer{B, C}, false},
		{"nested: child half-signed does not count", nested, []*signer{A, B}, false},
		{"nested: child key does not count directly", nestedWide, []*signer{A, B}, false},
		{"nested: two parent keys", nestedWide, []*signer{A, D}, true},
		{"nested: parent key and child", nestedWide, []*signer{D, C, B}, true},
		{"shared key counts for parent and child", shared, []*signer{A}, true},
		{"shared key: child key alone", shared, []*signer{B}, false},
		{"child with a user member", userChild, []*signer{A, B, U}, true},
		{"child with a user member, user missing", userChild, []*signer{A, B}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.q.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			p := mustPayload(t, bodyRequest(`{"method":"eth_signTransaction"}`))
			var sigs [][]byte
			for _, s := range tt.signers {
				sigs = append(sigs, s.sign(t, p))
			}
			a, err := quorum.Verify(p, sigs, tt.q.Candidates(), userKeys)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := tt.q.Satisfied(a); got != tt.want {
				t.Fatalf("Satisfied = %v, want %v (approvals %v)", got, tt.want, a)
			}
		})
	}
}

// TestSatisfiedInvalid: a quorum that breaks the structural rules is never
// satisfied, whatever the approvals.
func TestSatisfiedInvalid(t *testing.T) {
	A := newSigner(t)
	all := quorum.Approvals{Keys: map[string]bool{A.spki: true}, Users: map[string]bool{"u1": true}}
	for name, q := range map[string]quorum.Quorum{
		"no members, threshold 0": {ID: "kq"},
		"threshold 0":             {ID: "kq", Keys: []string{A.spki}},
		"grandchild": {ID: "kq", Threshold: 1, Children: []quorum.Quorum{{ID: "c", Threshold: 1,
			Children: []quorum.Quorum{{ID: "g", Keys: []string{A.spki}, Threshold: 1}}}}},
		"duplicate key": {ID: "kq", Keys: []string{A.spki, A.spki}, Threshold: 2},
	} {
		t.Run(name, func(t *testing.T) {
			if q.Satisfied(all) {
				t.Fatal("invalid quorum satisfied")
			}
		})
	}
	t.Run("nil approvals", func(t *testing.T) {
		q := quorum.Quorum{ID: "kq", Keys: []string{A.spki}, Threshold: 1}
		if q.Satisfied(quorum.Approvals{}) {
			t.Fatal("satisfied without approvals")
		}
	})
}

func TestValidate(t *testing.T) {
	k := make([]string, 8)
	for i := range k {
		k[i] = newSigner(t).spki
	}
	child := func(id string, keys ...string) quorum.Quorum {
		return quorum.Quorum{ID: id, Keys: keys, Threshold: 1}
	}
	children := func(n int) []quorum.Quorum {
		out := make([]quorum.Quorum, n)
		for i := range out {
			out[i] = child(fmt.Sprintf("kq_c%d", i), k[i])
		}
		return out
	}
	valid := []struct {
		name string
		q    quorum.Quorum
	}{
		{"one key", quorum.Quorum{ID: "kq", Keys: k[:1], Threshold: 1}},
		{"one user", quorum.Quorum{ID: "kq", UserIDs: []string{"u1"}, Threshold: 1}},
		{"threshold equals members", quorum.Quorum{ID: "kq", Keys: k[:2], UserIDs: []string{"u1"}, Children: children(1), Threshold: 4}},
		{"five children", quorum.Quorum{ID: "kq", Children: children(5), Threshold: 5}},
		{"only children", quorum.Quorum{ID: "kq", Children: children(2), Threshold: 1}},
		{"key shared by parent and child", quorum.Quorum{ID: "kq", Keys: k[:1], Children: []quorum.Quorum{child("kq_c", k[0])}, Threshold: 2}},
		{"empty parent id (not yet created)", quorum.Quorum{Keys: k[:1], Children: children(1), Threshold: 1}},
	}
	for _, tt := range valid {
		t.Run("valid/"+tt.name, func(t *testing.T) {
			if err := tt.q.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}

	invalid := []struct {
		name  string
		q     quorum.Quorum
		field string
	}{
		{"no members", quorum.Quorum{ID: "kq", Threshold: 1}, "public_keys"},
		{"threshold 0", quorum.Quorum{ID: "kq", Keys: k[:2], Threshold: 0}, "authorization_threshold"},
		{"negative threshold", quorum.Quorum{ID: "kq", Keys: k[:2], Threshold: -1}, "authorization_threshold"},
		{"threshold above members", quorum.Quorum{ID: "kq", Keys: k[:2], UserIDs: []string{"u1"}, Threshold: 4}, "authorization_threshold"},
		{"child counts as one member", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{{ID: "kq_c", Keys: k[:3], Threshold: 3}}, Threshold: 2}, "authorization_threshold"},
		{"six children", quorum.Quorum{ID: "kq", Children: children(6), Threshold: 1}, "key_quorum_ids"},
		{"grandchild", quorum.Quorum{ID: "kq", Threshold: 1, Children: []quorum.Quorum{{ID: "kq_c", Threshold: 1, Children: children(1)}}}, "key_quorum_ids"},
		{"duplicate key", quorum.Quorum{ID: "kq", Keys: []string{k[0], k[1], k[0]}, Threshold: 1}, "public_keys"},
		{"duplicate user", quorum.Quorum{ID: "kq", UserIDs: []string{"u1", "u1"}, Threshold: 1}, "user_ids"},
		{"empty user id", quorum.Quorum{ID: "kq", UserIDs: []string{""}, Threshold: 1}, "user_ids"},
		{"duplicate child", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{child("kq_c", k[0]), child("kq_c", k[0])}, Threshold: 1}, "key_quorum_ids"},
		{"child is itself", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{child("kq", k[0])}, Threshold: 1}, "key_quorum_ids"},
		{"empty child id", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{child("", k[0])}, Threshold: 1}, "key_quorum_ids"},
		{"invalid child threshold", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{{ID: "kq_c", Keys: k[:1], Threshold: 2}}, Threshold: 1}, "authorization_threshold"},
		{"child with no members", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{{ID: "kq_c", Threshold: 1}}, Threshold: 1}, "public_keys"},
		{"key not canonical (line break)", quorum.Quorum{ID: "kq", Keys: []string{k[0][:40] + "\n" + k[0][40:]}, Threshold: 1}, "public_keys"},
		{"key not a key", quorum.Quorum{ID: "kq", Keys: []string{"hello"}, Threshold: 1}, "public_keys"},
		{"empty key", quorum.Quorum{ID: "kq", Keys: []string{""}, Threshold: 1}, "public_keys"},
		{"child key not canonical", quorum.Quorum{ID: "kq", Children: []quorum.Quorum{child("kq_c", " "+k[0])}, Threshold: 1}, "public_keys"},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			err := tt.q.Validate()
			var ie *quorum.InputError
			if !errors.As(err, &ie) || !errors.Is(err, quorum.ErrInvalidQuorum) {
				t.Fatalf("got %v, want an *InputError wrapping ErrInvalidQuorum", err)
			}
			if ie.Field != tt.field {
				t.Fatalf("field %q, want %q (%v)", ie.Field, tt.field, err)
			}
			for _, key := range k {
				if strings.Contains(err.Error(), key) {
					t.Fatalf("error quotes a whole key: %v", err)
				}
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	q := quorum.Quorum{ID: "kq", Keys: []string{"a", "b"}, Threshold: 1, Children: []quorum.Quorum{
		{ID: "c1", Keys: []string{"b", "c"}, Threshold: 1},
		{ID: "c2", UserIDs: []string{"u"}, Keys: []string{"d", "a"}, Threshold: 1},
	}}
	if got, want := q.Candidates(), []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := (quorum.Quorum{UserIDs: []string{"u"}}).Candidates(); len(got) != 0 {
		t.Fatalf("users only: got %v", got)
	}
}
