package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/internal/audittest"
)

// exportLine is a line of the export as a receiver reads it: from the
// documented format, not from package audit.
type exportLine = audittest.Line

// receiverVerify is what a SIEM does with the export alone: every line
// follows the one before (or prevHash, the hash of the last record it
// already has), every hash is recomputed from the documented layout, and
// every checkpoint's signature verifies with the audit key pinned from the
// first checkpoint (or given). It returns the lines, the pinned key, and
// the first bad sequence number with the reason (0 when all verify).
func receiverVerify(t *testing.T, jsonl []byte, since uint64, prevHash []byte, pinned *ecdsa.PublicKey) ([]exportLine, *ecdsa.PublicKey, uint64, string) {
	t.Helper()
	var lines []exportLine
	dec := json.NewDecoder(bytes.NewReader(jsonl))
	dec.DisallowUnknownFields()
	for dec.More() {
		var l exportLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %d: %v", len(lines)+1, err)
		}
		lines = append(lines, l)
	}
	prev := prevHash
	next := since + 1
	for _, l := range lines {
		bad := func(reason string) ([]exportLine, *ecdsa.PublicKey, uint64, string) {
			return lines, pinned, l.Seq, reason
		}
		if l.Seq != next {
			return lines, pinned, next, fmt.Sprintf("record %d missing (next line is %d)", next, l.Seq)
		}
		p, _ := hex.DecodeString(l.PrevHash)
		if !bytes.Equal(p, prev) {
			return bad("prev_hash is not the previous record's hash")
		}
		sum, _ := hex.DecodeString(audittest.ReceiverHash(l))
		if hex.EncodeToString(sum) != l.Hash {
			return bad("hash does not match the fields")
		}
		if l.Action == "audit.checkpoint" {
			var d struct {
				CoversSeq  uint64 `json:"covers_seq"`
				CoversHash string `json:"covers_hash"`
				PublicKey  string `json:"public_key"`
				Signature  string `json:"signature"`
			}
			if err := json.Unmarshal([]byte(l.Detail), &d); err != nil {
				return bad("checkpoint detail: " + err.Error())
			}
			if pinned == nil {
				der, _ := base64.StdEncoding.DecodeString(d.PublicKey)
				k, err := x509.ParsePKIXPublicKey(der)
				if err != nil {
					return bad("checkpoint key: " + err.Error())
				}
				pinned = k.(*ecdsa.PublicKey)
			}
			ch := sha256.New()
			ch.Write([]byte("cachet-audit-checkpoint-v1\x00"))
			binary.Write(ch, binary.BigEndian, d.CoversSeq)
			ch.Write(prev)
			sig, _ := base64.StdEncoding.DecodeString(d.Signature)
			if d.CoversSeq != l.Seq-1 || d.CoversHash != hex.EncodeToString(prev) || !ecdsa.VerifyASN1(pinned, ch.Sum(nil), sig) {
				return bad("checkpoint does not verify")
			}
		}
		prev = sum
		next++
	}
	return lines, pinned, 0, ""
}

// `cachet audit export --since SEQ --format jsonl` gives a receiver
// everything to verify the chain from the export alone: the whole export
// verifies, an export since a record continues from that record's hash, and
// an edited or dropped line is caught at its sequence number.
func TestAuditExportVerifiesAlone(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	for i := 0; i < 2; i++ {
		a.serve(a.cfg).stop() // start, stop and checkpoint records
	}
	full := []byte(a.e.ok("audit", "export", "--config", a.cfg, "--format", "jsonl").stdout)
	lines, key, badSeq, reason := receiverVerify(t, full, 0, make([]byte, 32), nil)
	if badSeq != 0 {
		t.Fatalf("the untouched export fails at %d: %s\n%s", badSeq, reason, full)
	}
	checkpoints := 0
	for _, l := range lines {
		if l.Action == "audit.checkpoint" {
			checkpoints++
		}
	}
	if len(lines) < 5 || checkpoints < 2 || key == nil {
		t.Fatalf("export has %d records and %d checkpoints", len(lines), checkpoints)
	}

	// Since record k: the lines after it, chained to its hash.
	k := uint64(len(lines) / 2)
	tail := []byte(a.e.ok("audit", "export", "--config", a.cfg, "--since", fmt.Sprint(k)).stdout)
	prev, _ := hex.DecodeString(lines[k-1].Hash)
	got, _, badSeq, reason := receiverVerify(t, tail, k, prev, key)
	if badSeq != 0 || len(got) != len(lines)-int(k) || got[0].Seq != k+1 {
		t.Fatalf("export since %d: %d lines from %v, bad at %d (%s)", k, len(got), got[0].Seq, badSeq, reason)
	}
	if !bytes.HasSuffix(full, tail) {
		t.Fatal("the export since k is not the full export's tail")
	}

	// What a receiver must catch.
	raw := strings.SplitAfter(string(full), "\n")
	edited := append([]string{}, raw...)
	edited[2] = strings.Replace(edited[2], `"decision":"allow"`, `"decision":"deny"`, 1)
	if edited[2] == raw[2] {
		t.Fatalf("line 3 has no allow decision to edit: %s", raw[2])
	}
	if _, _, badSeq, _ := receiverVerify(t, []byte(strings.Join(edited, "")), 0, make([]byte, 32), key); badSeq != 3 {
		t.Errorf("edited record 3: verification fails at %d, want 3", badSeq)
	}
	dropped := append(append([]string{}, raw[:3]...), raw[4:]...)
	if _, _, badSeq, _ := receiverVerify(t, []byte(strings.Join(dropped, "")), 0, make([]byte, 32), key); badSeq != 4 {
		t.Errorf("dropped record 4: verification fails at %d, want 4", badSeq)
	}

	if r := a.e.run("audit", "export", "--config", a.cfg, "--format", "csv"); r.code == 0 {
		t.Errorf("--format csv accepted: %s", r)
	}
}
