package custody

import "time"

// SetNow replaces the service's clock, so tests can move time past expiries
// and TTLs. Call it before the service is used.
func SetNow(s *Service, now func() time.Time) { s.now = now }

// JWTOf returns the JWT verifier the service uses for app.
func JWTOf(s *Service, app string) (JWTVerifier, bool) { return s.opts.JWT(app) }
