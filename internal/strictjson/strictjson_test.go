package strictjson

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// wantErr compares err with want: nil, a sentinel, or an *Error compared by
// Path and Reason.
func wantErr(t *testing.T, err, want error) {
	t.Helper()
	var we *Error
	if errors.As(want, &we) {
		var ge *Error
		if !errors.As(err, &ge) {
			t.Fatalf("got %v (%T), want *Error %q: %q", err, err, we.Path, we.Reason)
		}
		if ge.Path != we.Path || ge.Reason != we.Reason {
			t.Fatalf("got *Error %q: %q, want %q: %q", ge.Path, ge.Reason, we.Path, we.Reason)
		}
		return
	}
	if !errors.Is(err, want) || (want == nil) != (err == nil) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func at(path, reason string) error { return &Error{Path: path, Reason: reason} }

func nest(open, close string, n int, inner string) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
}

func TestCheck(t *testing.T) {
	long := strings.Repeat("k", MaxKeyChars+1)
	keep := &Options{KeepLongKeys: true, DropEmptyKeys: true}
	tests := []struct {
		name string
		opt  *Options
		body string
		want error
	}{
		{"empty object", nil, `{}`, nil},
		{"nested object", nil, `{"a":{"b":[1,"x",{"c":null}]},"d":true}`, nil},
		{"whitespace around", nil, " \t\n{\"a\":1}\r\n", nil},
		{"same key in sibling objects", nil, `{"a":{"x":1},"b":{"x":1}}`, nil},
		{"same key at two depths", nil, `{"x":{"x":{"x":1}}}`, nil},

		// Duplicate keys, at any depth.
		{"duplicate at the top", nil, `{"a":1,"a":2}`, at("a", "duplicate key")},
		{"duplicate in a nested object", nil, `{"a":{"b":{"c":1,"d":2,"c":3}}}`, at("a.b.c", "duplicate key")},
		{"duplicate in an array element", nil, `{"a":[{"x":1},{"y":1,"y":2}]}`, at("a[1].y", "duplicate key")},
		{"duplicate in nested arrays", nil, `{"a":[[],[0,{"z":1,"z":1}]]}`, at("a[1][1].z", "duplicate key")},
		{"duplicate by escape", nil, `{"a":1,"\u0061":2}`, at("a", "duplicate key")},
		{"duplicate with different values", nil, `{"a":{"b":1},"a":[]}`, at("a", "duplicate key")},
		{"duplicate before broken JSON", nil, `{"a":1,"a":2,`, at("a", "duplicate key")},
		{"empty key twice", nil, `{"p":{"":1,"":2}}`, at("p.", "duplicate key")},
		{"empty key twice, dropped", &Options{DropEmptyKeys: true}, `{"p":{"":1,"":2}}`, at("p", "duplicate key")},
		{"empty key twice at the top", nil, `{"":1,"":2}`, at("", "duplicate key")},
		{"long key twice", nil, `{"p":{"` + long + `":1,"` + long + `":2}}`, at("p.…", "duplicate key")},
		{"long key twice, kept", keep, `{"p":{"` + long + `":1,"` + long + `":2}}`, at("p", "duplicate key")},
		{"duplicate below a long key", nil, `{"` + long + `":{"a":1,"a":2}}`, at("….a", "duplicate key")},
		{"duplicate below a long key, kept", keep, `{"` + long + `":{"a":1,"a":2}}`, at(long+".a", "duplicate key")},

		// Depth: the body's object is level 1.
		{"depth at the limit", nil, `{"a":` + nest(`[`, `]`, 3, ``) + `}`, nil},
		{"depth over the limit", nil, `{"a":` + nest(`[`, `]`, 4, ``) + `}`, at("a[0][0][0]", "is nested more than 4 levels deep")},
		{"objects over the limit", nil, `{"a":` + nest(`{"b":`, `}`, 4, `1`) + `}`, at("a.b.b.b", "is nested more than 4 levels deep")},
		{"depth under a long key", nil, `{"` + long + `":` + nest(`[`, `]`, 4, ``) + `}`, at("…[0][0][0]", "is nested more than 4 levels deep")},
		{"depth under a long key, kept", keep, `{"` + long + `":` + nest(`[`, `]`, 4, ``) + `}`, at(long+"[0][0][0]", "is nested more than 4 levels deep")},
		{"deep before broken JSON", nil, `{"a":` + nest(`[`, ``, 10, ``), at("a[0][0][0]", "is nested more than 4 levels deep")},

		// The body as a whole.
		{"empty body", nil, ``, ErrSyntax},
		{"only whitespace", nil, "  \n", ErrSyntax},
		{"not JSON", nil, `{"a":`, ErrSyntax},
		{"missing colon", nil, `{"a" 1}`, ErrSyntax},
		{"trailing comma", nil, `{"a":1,}`, ErrSyntax},
		{"trailing comma in an array", nil, `{"a":[1,]}`, ErrSyntax},
		{"unclosed array", nil, `{"a":[1`, ErrSyntax},
		{"mismatched close", nil, `{"a":[1}}`, ErrSyntax},
		{"array body", nil, `[1]`, ErrNotObject},
		{"array body with a duplicate", nil, `[{"a":1,"a":2}]`, ErrNotObject},
		{"broken array body", nil, `[`, ErrNotObject},
		{"string body", nil, `"x"`, ErrNotObject},
		{"number body", nil, `1`, ErrNotObject},
		{"null body", nil, `null`, ErrNotObject},
		{"second object", nil, `{} {}`, ErrTrailingData},
		{"trailing garbage", nil, `{"a":1}x`, ErrTrailingData},
		{"trailing bracket", nil, `{}]`, ErrTrailingData},
		{"trailing number", nil, `{} 1`, ErrTrailingData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.opt.Check([]byte(tc.body), 4), tc.want)
		})
	}
}

func TestCheckValue(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"object", `{"a":[1]}`, nil},
		{"array", `[1,{"a":2}]`, nil},
		{"string", `"x"`, nil},
		{"null", `null`, nil},
		{"duplicate in an array body", `[0,{"a":1,"a":2}]`, at("[1].a", "duplicate key")},
		{"deep array body", nest(`[`, `]`, 5, ``), at("[0][0][0][0]", "is nested more than 4 levels deep")},
		{"two values", `1 2`, ErrTrailingData},
		{"empty", ``, ErrSyntax},
		{"broken", `[1,`, ErrSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opt Options
			wantErr(t, opt.CheckValue([]byte(tc.body), 4), tc.want)
		})
	}
}

func TestParseObject(t *testing.T) {
	var opt Options
	tests := []struct {
		name string
		raw  string
		path string
		want error
	}{
		{"object", `{"a":1}`, "p", nil},
		{"object with spaces", " {\"a\":1} ", "p", nil},
		{"missing", ``, "p", at("p", "is required")},
		{"null", `null`, "p.q[1]", at("p.q[1]", "is required")},
		{"array", `[]`, "p", at("p", "must be a JSON object")},
		{"string", `"{}"`, "p", at("p", "must be a JSON object")},
		{"broken", `{"a":`, "p", at("p", "must be a JSON object")},
		{"missing body", ``, "", ErrNotObject},
		{"array body", `[]`, "", ErrNotObject},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := opt.ParseObject(json.RawMessage(tc.raw), tc.path)
			wantErr(t, err, tc.want)
		})
	}

	o, err := opt.ParseObject(json.RawMessage(`{"b":null,"a":1,"c":"x","":[]}`), "p")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Keys(); !slices.Equal(got, []string{"", "a", "b", "c"}) {
		t.Errorf("Keys() = %q", got)
	}
	if string(o.Get("a")) != "1" || string(o.Get("c")) != `"x"` || o.Get("b") != nil || o.Get("z") != nil {
		t.Errorf("Get: a=%s c=%s b=%s z=%s", o.Get("a"), o.Get("c"), o.Get("b"), o.Get("z"))
	}
	if !o.Has("b") || o.Has("z") {
		t.Errorf("Has(b)=%v Has(z)=%v", o.Has("b"), o.Has("z"))
	}
	if o.Field("a") != "p.a" || o.Field("") != "p." {
		t.Errorf("Field: %q %q", o.Field("a"), o.Field(""))
	}
	root, err := (&Options{DropEmptyKeys: true}).ParseObject(json.RawMessage(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if root.Field("a") != "a" || root.Field("") != "" {
		t.Errorf("root Field: %q %q", root.Field("a"), root.Field(""))
	}
}

func TestParseArray(t *testing.T) {
	items, err := ParseArray(json.RawMessage(` [1, {"a":2}, null] `), "p")
	if err != nil || len(items) != 3 || string(items[1]) != `{"a":2}` {
		t.Fatalf("ParseArray = %q, %v", items, err)
	}
	for _, raw := range []string{``, `null`, `{}`, `"[]"`, `[1,`} {
		_, err := ParseArray(json.RawMessage(raw), "p[2].q")
		wantErr(t, err, at("p[2].q", "must be an array"))
	}
}

func TestOnly(t *testing.T) {
	hints := map[string]string{"chainId": "chain_id", "typedData": "typed_data"}
	long := strings.Repeat("x", MaxKeyChars+1)
	scoped := &Options{Hints: hints}
	anywhere := &Options{Hints: hints, HintAnywhere: true}
	tests := []struct {
		name    string
		opt     *Options
		body    string
		path    string
		allowed []string
		want    error
	}{
		{"all allowed", scoped, `{"a":1,"b":null}`, "p", []string{"a", "b", "c"}, nil},
		{"empty object", scoped, `{}`, "p", nil, nil},
		{"unknown key", scoped, `{"a":1,"zz":2}`, "p.q", []string{"a"}, at("p.q.zz", "unknown field")},
		{"first unknown in sorted order", scoped, `{"z":1,"b":2,"m":3}`, "p", []string{"m"}, at("p.b", "unknown field")},
		{"unknown key in an array element", scoped, `{"x":1}`, IndexPath("list", 3), nil, at("list[3].x", "unknown field")},
		{"hint", scoped, `{"chainId":1}`, "tx", []string{"chain_id"}, at("tx.chainId", `unknown field; did you mean "chain_id"?`)},
		{"hint not allowed here", scoped, `{"chainId":1}`, "params", []string{"transaction"}, at("params.chainId", "unknown field")},
		{"hint anywhere", anywhere, `{"chainId":1}`, "params", []string{"transaction"}, at("params.chainId", `unknown field; did you mean "chain_id"?`)},
		{"no hints", nil, `{"chainId":1}`, "tx", []string{"chain_id"}, at("tx.chainId", "unknown field")},
		{"hint at the top", scoped, `{"typedData":1}`, "", []string{"typed_data"}, at("typedData", `unknown field; did you mean "typed_data"?`)},
		{"long unknown key", scoped, `{"` + long + `":1}`, "p", nil, at("p", "has an unknown field with a 65-character name")},
		{"long unknown key at the top", scoped, `{"` + long + `":1}`, "", nil, at("", "has an unknown field with a 65-character name")},
		{"empty unknown key", scoped, `{"":1}`, "p", []string{"a"}, at("p.", "unknown field")},
		{"empty unknown key, dropped", &Options{DropEmptyKeys: true}, `{"":1}`, "p", []string{"a"}, at("p", "unknown field")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.opt.ParseObject(json.RawMessage(tc.body), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			wantErr(t, o.Only(tc.allowed...), tc.want)
		})
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{JoinPath("", "a"), "a"},
		{JoinPath("a", "b"), "a.b"},
		{JoinPath("a[0]", "b"), "a[0].b"},
		{JoinPath("a", ""), "a."},
		{JoinPath("", ""), ""},
		{IndexPath("a", 0), "a[0]"},
		{IndexPath("a.b[2]", 13), "a.b[2][13]"},
		{IndexPath("", 1), "[1]"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for raw, want := range map[string]bool{``: false, `null`: false, ` null `: false, `0`: true, `""`: true, `{}`: true, `nul`: true} {
		if Present(json.RawMessage(raw)) != want {
			t.Errorf("Present(%q) = %v", raw, !want)
		}
	}
}

func TestErrorPathIsCapped(t *testing.T) {
	long := strings.Repeat("k", 1000)
	err := (&Options{KeepLongKeys: true}).Check([]byte(`{"`+long+`":{"a":1,"a":2}}`), 64)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v", err)
	}
	if e.Path != long[:MaxPathChars]+"…" || e.Reason != "duplicate key" {
		t.Fatalf("got %q: %q", e.Path, e.Reason)
	}
	if got := (&Error{Path: "a.b", Reason: "duplicate key"}).Error(); got != "invalid a.b: duplicate key" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&Error{Reason: "unknown field"}).Error(); got != "invalid body: unknown field" {
		t.Errorf("Error() = %q", got)
	}
}

// FuzzCheck: Check never panics; what it accepts is one JSON object that
// encoding/json decodes; it agrees with CheckValue on objects; and every
// problem it reports is either about the body as a whole or an *Error with
// a reason.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":{"b":[1,2,{"c":null}]}}`, `{"a":1,"a":2}`, `{"a":[{"x":1},{"x":1,"x":2}]}`,
		`{"a":` + nest(`[`, `]`, 70, ``) + `}`, `{} {}`, `[1]`, `{"` + strings.Repeat("k", 70) + `":1}`,
		`{"":1,"":2}`, `{"\u0061":1,"a":2}`, `{"a":`,
	} {
		f.Add([]byte(s))
	}
	opts := []*Options{nil, {KeepLongKeys: true, DropEmptyKeys: true}}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, opt := range opts {
			err := opt.Check(body, 8)
			errValue := opt.CheckValue(body, 8)
			var e *Error
			switch {
			case err == nil:
				var m map[string]any
				if !json.Valid(body) || json.Unmarshal(body, &m) != nil || m == nil {
					t.Fatalf("accepted %q, which is not one JSON object", body)
				}
				if errValue != nil {
					t.Fatalf("Check accepts %q, CheckValue says %v", body, errValue)
				}
			case errors.As(err, &e):
				if e.Reason == "" || len(e.Path) > MaxPathChars+len("…") {
					t.Fatalf("error %q: %q", e.Path, e.Reason)
				}
			case errors.Is(err, ErrTrailingData) || errors.Is(err, ErrSyntax):
				if json.Valid(body) && errors.Is(err, ErrSyntax) {
					t.Fatalf("valid JSON %q reported as %v", body, err)
				}
			case !errors.Is(err, ErrNotObject):
				t.Fatalf("unexpected error %T %v", err, err)
			}
			if errValue == nil && !json.Valid(body) {
				t.Fatalf("CheckValue accepted %q, which is not valid JSON", body)
			}
		}
	})
}
