package authkeys

import "time"

// SetNow replaces the service's clock (rate-limit tests).
func SetNow(s *Service, now func() time.Time) { s.now = now }

// Matches exposes the pattern matcher to table tests.
var Matches = matches
