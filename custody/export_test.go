package custody

import "time"

// SetNow replaces the service's clock, so tests can move time past expiries
// and TTLs. Call it before the service is used.
func SetNow(s *Service, now func() time.Time) { s.now = now }
