// Package audittest reads `cachet audit export` the way a receiver does:
// a line in the documented format, and its hash recomputed from the
// exported fields alone by the algorithm the README documents. It is
// written apart from package audit's code, so that tests compare two
// implementations, not one with itself.
package audittest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Line is one line of the export, from the documented format.
type Line struct {
	Seq           uint64 `json:"seq"`
	TimeNS        int64  `json:"ts_ns"`
	Time          string `json:"time"`
	Actor         string `json:"actor"`
	Action        string `json:"action"`
	Target        string `json:"target"`
	Decision      string `json:"decision"`
	RequestDigest string `json:"request_digest"`
	ResultDigest  string `json:"result_digest"`
	Detail        string `json:"detail"`
	PrevHash      string `json:"prev_hash"`
	Hash          string `json:"hash"`
}

// ReceiverHash is the hash, hex, of an exported record: SHA-256 of
// "cachet-audit-v1\x00", seq and ts_ns (8 bytes big-endian each), each of
// actor, action, target, decision, request_digest, result_digest and detail
// as a 4-byte big-endian length and its bytes (digests raw), then prev_hash.
func ReceiverHash(l Line) string {
	h := sha256.New()
	h.Write([]byte("cachet-audit-v1\x00"))
	binary.Write(h, binary.BigEndian, l.Seq)
	binary.Write(h, binary.BigEndian, uint64(l.TimeNS))
	reqD, _ := hex.DecodeString(l.RequestDigest)
	resD, _ := hex.DecodeString(l.ResultDigest)
	for _, f := range [][]byte{[]byte(l.Actor), []byte(l.Action), []byte(l.Target), []byte(l.Decision), reqD, resD, []byte(l.Detail)} {
		binary.Write(h, binary.BigEndian, uint32(len(f)))
		h.Write(f)
	}
	prev, _ := hex.DecodeString(l.PrevHash)
	h.Write(prev)
	return hex.EncodeToString(h.Sum(nil))
}
