package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The repository is fit to ship: no tracked file over 1 MB (no build
// output, no vendored blob), a licence, Vault's Shamir vendored with its
// MPL-2.0 licence and headers, and no github.com/hashicorp/vault module in
// the build graph.
func TestRepositoryHygiene(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		fi, err := os.Stat("../" + f)
		if err != nil {
			continue // deleted in the work tree
		}
		if fi.Size() > 1<<20 {
			t.Errorf("%s is tracked and %d bytes (over 1 MB)", f, fi.Size())
		}
	}
	for _, c := range []struct{ file, want string }{
		{"../LICENSE", "Apache License"},
		{"../internal/shamir/LICENSE", "Mozilla Public License, version 2.0"},
		{"../internal/shamir/shamir.go", "SPDX-License-Identifier: MPL-2.0"},
		{"../internal/shamir/shamir_test.go", "SPDX-License-Identifier: MPL-2.0"},
	} {
		b, err := os.ReadFile(c.file)
		if err != nil || !bytes.Contains(b, []byte(c.want)) {
			t.Errorf("%s lacks %q (%v)", c.file, c.want, err)
		}
	}
	cmd := exec.Command("go", "mod", "graph")
	cmd.Dir = ".."
	graph, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod graph: %v", err)
	}
	for _, m := range []string{"github.com/hashicorp/vault@", "github.com/tyler-smith/go-bip39@"} {
		if bytes.Contains(graph, []byte(m)) {
			t.Errorf("go mod graph still holds %s", m)
		}
	}
}
