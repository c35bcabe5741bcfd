package clip

import (
	"testing"
	"unicode/utf8"
)

func TestTo(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"", 0, ""},
		{"a", 0, "…"},
		{"aé", 2, "a…"},   // é is 2 bytes: not cut in half
		{"aéb", 3, "aé…"}, // the cut falls after é
		{"€€", 4, "€…"},   // € is 3 bytes
		{"\xff\xfe", 1, "\xff…"},
	} {
		if got := To(c.in, c.n); got != c.want {
			t.Errorf("To(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
		if utf8.ValidString(c.in) && !utf8.ValidString(To(c.in, c.n)) {
			t.Errorf("To(%q, %d) is not valid UTF-8", c.in, c.n)
		}
	}
}
