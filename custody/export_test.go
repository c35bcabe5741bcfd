package custody

import "time"

// SetNow replaces the service's clock, so tests can move time past expiries
// and TTLs. Call it before the service is used.
func SetNow(s *Service, now func() time.Time) { s.now = now }

// JWTOf returns the JWT verifier the service uses for app.
func JWTOf(s *Service, app string) (JWTVerifier, bool) { return s.opts.JWT(app) }

// SetAfterAuthorize makes rpc, raw_sign and export call f right after their
// signatures were checked and before anything is released.
func SetAfterAuthorize(s *Service, f func()) { s.afterAuthorize = f }
