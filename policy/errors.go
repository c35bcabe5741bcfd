package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/internal/strictjson"
)

// ValidationError reports a policy, rule or aggregation body that Cachet
// refuses. The HTTP edge maps it to 400 {"code":"invalid_data"}.
//
// Path is the JSON path of the bad element in the body, for example
// "rules[2].conditions[0].operator" or "rules[0].conditions[1].value[3]";
// Reason says what is wrong without repeating the value.
type ValidationError struct {
	Path   string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Path == "" {
		return "invalid policy: " + e.Reason
	}
	return "invalid " + e.Path + ": " + e.Reason
}

// ValidationErrors is every problem Validate found, in body order (at most
// 20). errors.As(err, &ve) with ve a *ValidationError finds the first.
type ValidationErrors []*ValidationError

func (l ValidationErrors) Error() string {
	if len(l) == 0 {
		return "invalid policy"
	}
	if len(l) == 1 {
		return l[0].Error()
	}
	return l[0].Error() + " (and " + strconv.Itoa(len(l)-1) + " more)"
}

// Unwrap lets errors.As reach each *ValidationError.
func (l ValidationErrors) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// maxPathChars caps ValidationError.Path: paths are built from the client's
// keys.
const maxPathChars = 256

func verr(path, format string, args ...any) *ValidationError {
	path = clip.To(path, maxPathChars)
	return &ValidationError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// joinPath is strictjson.JoinPath except that an empty name is its parent's
// path: callers join optional sub-paths, and an empty key in a body is
// reported at its object.
func joinPath(parent, name string) string {
	if name == "" {
		return parent
	}
	return strictjson.JoinPath(parent, name)
}

// collector gathers validation errors up to a limit.
type collector struct {
	errs ValidationErrors
}

func (c *collector) add(e *ValidationError) {
	if e != nil && len(c.errs) < maxValidationErrors {
		c.errs = append(c.errs, e)
	}
}

func (c *collector) full() bool { return len(c.errs) >= maxValidationErrors }

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return c.errs
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
