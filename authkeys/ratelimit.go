package authkeys

import (
	"crypto/rand"
	"time"
)

var randRead = rand.Read

// bucket is a token bucket: one key's allowance of signatures.
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends one token of key id's bucket, refilled at RatePerSecond up
// to Burst; false means the key is over its limit.
func (s *Service) take(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b, ok := s.buckets[id]
	if !ok {
		b = &bucket{tokens: float64(s.opts.Burst), last: now}
		s.buckets[id] = b
	}
	b.tokens = min(float64(s.opts.Burst), b.tokens+now.Sub(b.last).Seconds()*s.opts.RatePerSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
