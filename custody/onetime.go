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
	scopes  []string // what the limits count over: the app, the user, the wallet
	v       T
	expires time.Time
}

// limit is how many live values one scope may hold.
type limit struct {
	scope string
	max   int
}

// put stores v under key until expires, replacing an earlier value under
// the same key, after dropping expired ones. It refuses, returning the
// limit that is full, when any scope already holds its max live values: a
// per-app limit alone would let one user fill it for everyone.
func (o *oneTime[T]) put(key string, v T, expires, now time.Time, limits ...limit) (full *limit) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]oneTimeEntry[T]{}
	}
	counts := make([]int, len(limits))
	for k, e := range o.m {
		if !now.Before(e.expires) {
			delete(o.m, k)
			continue
		}
		for i, l := range limits {
			for _, sc := range e.scopes {
				if sc == l.scope {
					counts[i]++
				}
			}
		}
	}
	if _, replacing := o.m[key]; !replacing {
		for i := range limits {
			if counts[i] >= limits[i].max {
				return &limits[i]
			}
		}
	}
	scopes := make([]string, len(limits))
	for i, l := range limits {
		scopes[i] = l.scope
	}
	o.m[key] = oneTimeEntry[T]{scopes: scopes, v: v, expires: expires}
	return nil
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
