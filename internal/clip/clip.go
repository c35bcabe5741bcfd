// Package clip shortens text that is echoed back to a caller or into a
// record (an id from a body, a path, a header), so that what an error
// message or an audit record holds is bounded whatever the input.
package clip

// To returns s if it has at most n bytes, or else its first n bytes, cut
// back to a UTF-8 rune boundary, followed by "…". A cut in the middle of a
// rune would make the text invalid UTF-8, which JSON encoders replace and
// hash-chained records could then not be checked against.
func To(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
