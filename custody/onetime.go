package custody

import (
	"sync"
	"time"
)

// oneTime holds values that each serve one request and then expire: the
// HPKE keys of wallet imports between init and submit, and the challenges
// of embedded wallets. They live only in memory: a restart forgets them and
// the client starts again, which costs nothing, while a stored copy would be
// one more secret to seal, back up and purge.
type oneTime[T any] struct {
	mu sync.Mutex
	m  map[string]oneTimeEntry[T]
}

type oneTimeEntry[T any] struct {
	scope   string // what max counts over: the app
	v       T
	expires time.Time
}

// put stores v under key until expires, replacing an earlier value under
// the same key, after dropping expired ones. It refuses when scope already
// holds max live values.
func (o *oneTime[T]) put(scope, key string, v T, expires, now time.Time, max int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]oneTimeEntry[T]{}
	}
	n := 0
	for k, e := range o.m {
		if !now.Before(e.expires) {
			delete(o.m, k)
		} else if e.scope == scope {
			n++
		}
	}
	if _, replacing := o.m[key]; !replacing && n >= max {
		return false
	}
	o.m[key] = oneTimeEntry[T]{scope: scope, v: v, expires: expires}
	return true
}

// take removes and returns the value under key: each serves one request,
// whatever its outcome, so a request cannot be retried against it to learn
// anything. An expired value is not returned.
func (o *oneTime[T]) take(key string, now time.Time) (T, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.m[key]
	delete(o.m, key)
	if !ok || !now.Before(e.expires) {
		var zero T
		return zero, false
	}
	return e.v, true
}
