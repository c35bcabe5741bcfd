package quorum_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/quorum"
)

func TestCheckExpiry(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	const horizon = 10 * time.Minute
	ms := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).UnixMilli(), 10) }
	tests := []struct {
		name   string
		header string
		want   time.Time
		err    error
	}{
		{name: "absent", header: "", want: time.Time{}},
		{name: "in a minute", header: ms(time.Minute), want: now.Add(time.Minute)},
		{name: "now", header: ms(0), want: now},
		{name: "exactly the horizon", header: ms(horizon), want: now.Add(horizon)},
		{name: "leading zeros", header: "0" + ms(time.Minute), want: now.Add(time.Minute)},

		{name: "a millisecond ago", header: ms(-time.Millisecond), err: quorum.ErrExpired},
		{name: "an hour ago", header: ms(-time.Hour), err: quorum.ErrExpired},
		{name: "zero", header: "0", err: quorum.ErrExpired},
		{name: "seconds instead of milliseconds", header: strconv.FormatInt(now.Add(time.Minute).Unix(), 10), err: quorum.ErrExpired},
		{name: "a millisecond past the horizon", header: ms(horizon + time.Millisecond), err: quorum.ErrExpiryTooFar},
		{name: "a year ahead", header: ms(365 * 24 * time.Hour), err: quorum.ErrExpiryTooFar},
		{name: "fifteen nines", header: "999999999999999", err: quorum.ErrExpiryTooFar},
		{name: "sixteen digits", header: "1000000000000000", err: quorum.ErrMalformedExpiry},
		{name: "negative", header: "-1", err: quorum.ErrMalformedExpiry},
		{name: "plus sign", header: "+" + ms(time.Minute), err: quorum.ErrMalformedExpiry},
		{name: "fraction", header: ms(time.Minute) + ".5", err: quorum.ErrMalformedExpiry},
		{name: "exponent", header: "1.8e12", err: quorum.ErrMalformedExpiry},
		{name: "space", header: " " + ms(time.Minute), err: quorum.ErrMalformedExpiry},
		{name: "RFC 3339", header: now.Add(time.Minute).Format(time.RFC3339), err: quorum.ErrMalformedExpiry},
		{name: "hex", header: "0x1a", err: quorum.ErrMalformedExpiry},
		{name: "overflow", header: "99999999999999999999999", err: quorum.ErrMalformedExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := quorum.CheckExpiry(tt.header, now, horizon)
			if tt.err != nil {
				var ae *quorum.AuthError
				if !errors.As(err, &ae) || !errors.Is(err, tt.err) {
					t.Fatalf("got %v, %v; want an *AuthError wrapping %v", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckExpiry: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("zero horizon refuses any future expiry", func(t *testing.T) {
		if _, err := quorum.CheckExpiry(ms(time.Millisecond), now, 0); !errors.Is(err, quorum.ErrExpiryTooFar) {
			t.Fatalf("got %v, want ErrExpiryTooFar", err)
		}
	})
}
