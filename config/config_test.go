package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The example file documents every setting with its default; parsing it must
// give exactly Default(), and every key of the schema must appear in it.
func TestExampleIsDefault(t *testing.T) {
	data, err := os.ReadFile("cachet.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("/etc/cachet/cachet.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.undec) > 0 {
		t.Fatalf("example has unknown keys: %v", got.undec)
	}
	want := Default()
	want.path, want.undec, want.meta = got.path, got.undec, got.meta
	want.resolvePaths()
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("example differs from Default():\n got %+v\nwant %+v", *got, want)
	}
	for _, key := range schemaKeys(reflect.TypeOf(Config{}), "") {
		leaf := key[strings.LastIndexByte(key, '.')+1:]
		if !regexp.MustCompile(`(?m)^#? ?` + regexp.QuoteMeta(leaf) + ` =`).Match(data) {
			t.Errorf("setting %s is not documented in cachet.example.toml", key)
		}
	}
}

func schemaKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		ft := f.Type
		if (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer) && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Duration{}) {
			out = append(out, schemaKeys(ft, prefix+tag+".")...)
			continue
		}
		out = append(out, prefix+tag)
	}
	return out
}

func writeFile(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckProblems(t *testing.T) {
	dir := t.TempDir()
	module := writeFile(t, dir, "module.so", "", 0o644)
	pin := writeFile(t, dir, "pin", "1234\n", 0o600)
	loosePin := writeFile(t, dir, "loose-pin", "1234\n", 0o644)
	good := `data_dir = "` + dir + `"
[backend.pkcs11]
module = "` + module + `"
pin_file = "` + pin + `"
`
	app := "[[apps]]\nid = \"app_1\"\nsecret_hash = \"" + HashAppSecret("s") + "\"\n"
	jwks := writeFile(t, dir, "jwks.json", `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`, 0o644)
	emptyJWKS := writeFile(t, dir, "empty-jwks.json", `{"keys":[]}`, 0o644)
	sig := func(extra string) string {
		return "[[signer]]\nname = \"geth\"\nsocket = \"/run/s.ipc\"\napp = \"app_1\"\ncaip2 = \"eip155:1337\"\nwallets = [\"w1\"]\nauthorization_key = \"k1\"\n" + extra
	}
	tests := []struct {
		name    string
		body    string
		wantKey string // "" means no problem expected
	}{
		{"minimal pkcs11 is fine", good, ""},
		{"unknown key", good + "[server]\nsokcet = \"/x\"\n", "server.sokcet"},
		{"unknown section", good + "[audti]\n", "audti"},
		{"bad kind", strings.Replace(good, "[backend.pkcs11]", "[backend]\nkind = \"yubikey\"\n[backend.pkcs11]", 1), "backend.kind"},
		{"world socket", good + "[server]\nsocket_mode = \"0666\"\n", "server.socket_mode"},
		{"non-octal mode", good + "[server]\nsocket_mode = \"rw\"\n", "server.socket_mode"},
		{"bad url", good + "[server]\npublic_url = \"localhost\"\n", "server.public_url"},
		{"url with query", good + "[server]\npublic_url = \"http://localhost/?a=1\"\n", "server.public_url"},
		{"bad duration", good + "[server]\ndrain_timeout = \"-1s\"\n", "server.drain_timeout"},
		{"missing pin", strings.Replace(good, `pin_file = "`+pin+`"`, "", 1), "backend.pkcs11.pin_file"},
		{"both pin sources", good + "pin_env = \"X\"\n", "backend.pkcs11.pin_file"},
		{"pin readable by others", strings.Replace(good, pin, loosePin, 1), "backend.pkcs11.pin_file"},
		{"pin env unset", strings.Replace(good, `pin_file = "`+pin+`"`, `pin_env = "CACHET_TEST_UNSET_VAR"`, 1), "backend.pkcs11.pin_env"},
		{"module missing", strings.Replace(good, module, dir+"/nope.so", 1), "backend.pkcs11.module"},
		{"sessions zero", good + "sessions = 0\n", "backend.pkcs11.sessions"},
		{"tpm bad pcr", "[backend]\nkind = \"tpm\"\n[backend.tpm]\npcrs = [7, 24]\n", "backend.tpm.pcrs[1]"},
		{"tpm dup pcr", "[backend]\nkind = \"tpm\"\n[backend.tpm]\npcrs = [7, 7]\n", "backend.tpm.pcrs[1]"},
		{"tpm unprotected", "[backend]\nkind = \"tpm\"\n[backend.tpm]\npcrs = []\n", "backend.tpm.pcrs"},
		{"tpm bad device", "[backend]\nkind = \"tpm\"\n[backend.tpm]\ndevice = \"tcp:localhost\"\n", "backend.tpm.device"},
		{"tpm bad handle", "[backend]\nkind = \"tpm\"\n[backend.tpm]\nhandle = 0x01000000\n", "backend.tpm.handle"},
		{"tpm swtpm ok", "[backend]\nkind = \"tpm\"\n[backend.tpm]\ndevice = \"tcp:127.0.0.1:2321\"\npcrs = [16]\n", ""},
		{"app bad hash", good + "[[apps]]\nid = \"app_1\"\nsecret_hash = \"plaintext\"\n", "apps[0].secret_hash"},
		{"app dup id", good + "[[apps]]\nid = \"a\"\nsecret_hash = \"" + HashAppSecret("x") + "\"\n[[apps]]\nid = \"a\"\nsecret_hash = \"" + HashAppSecret("y") + "\"\n", "apps[1].id"},
		{"app jwt ok", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\nissuer = \"https://idp/\"\naudience = \"cachet\"\n", ""},
		{"app jwt no issuer", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\naudience = \"cachet\"\n", "apps[0].jwt.issuer"},
		{"app jwt no audience", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\nissuer = \"https://idp/\"\n", "apps[0].jwt.audience"},
		{"app jwt no key source", good + app + "[apps.jwt]\nissuer = \"https://idp/\"\naudience = \"cachet\"\n", "apps[0].jwt.jwks_file"},
		{"app jwt two key sources", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\njwks_url = \"https://idp/jwks\"\nissuer = \"i\"\naudience = \"a\"\n", "apps[0].jwt.jwks_file"},
		{"app jwt hmac", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\nissuer = \"i\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n", "apps[0].jwt.algorithms"},
		{"app jwt url scheme", good + app + "[apps.jwt]\njwks_url = \"ftp://idp/jwks\"\nissuer = \"i\"\naudience = \"a\"\n", "apps[0].jwt.jwks_url"},
		{"app jwt skew", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\nissuer = \"i\"\naudience = \"a\"\nclock_skew = \"1h\"\n", "apps[0].jwt.clock_skew"},
		{"app jwt unknown key", good + app + "[apps.jwt]\njwks_file = \"" + jwks + "\"\nissuer = \"i\"\naudience = \"a\"\nleeway = \"1s\"\n", "apps.jwt.leeway"},
		{"app jwt empty jwks", good + app + "[apps.jwt]\njwks_file = \"" + emptyJWKS + "\"\nissuer = \"i\"\naudience = \"a\"\n", "apps[0].jwt.jwks_file"},
		{"app jwt missing pem", good + app + "[apps.jwt]\npublic_key_file = \"" + dir + "/nope.pem\"\nissuer = \"i\"\naudience = \"a\"\n", "apps[0].jwt.public_key_file"},
		{"user key lifetime", good + "[api]\nuser_key_lifetime = \"10s\"\n", "api.user_key_lifetime"},
		{"max user keys", good + "[api]\nmax_user_keys = 0\n", "api.max_user_keys"},
		{"import key lifetime", good + "[api]\nimport_key_lifetime = \"2h\"\n", "api.import_key_lifetime"},
		{"signer ok", good + app + sig(""), ""},
		{"signer bad name", good + app + strings.Replace(sig(""), `"geth"`, `"ge th"`, 1), "signer[0].name"},
		{"signer dup name", good + app + sig("") + strings.Replace(sig(""), "/run/s.ipc", "/run/t.ipc", 1), "signer[1].name"},
		{"signer socket of the api", good + app + strings.Replace(sig(""), "/run/s.ipc", "/run/cachet/cachet.sock", 1), "signer[0].socket"},
		{"signer world socket", good + app + sig("socket_mode = \"0666\"\n"), "signer[0].socket_mode"},
		{"signer unknown app", good + app + strings.Replace(sig(""), `"app_1"`, `"app_2"`, 1), "signer[0].app"},
		{"signer bad chain", good + app + strings.Replace(sig(""), "eip155:1337", "eip155:0", 1), "signer[0].caip2"},
		{"signer no wallets", good + app + strings.Replace(sig(""), `["w1"]`, `[]`, 1), "signer[0].wallets"},
		{"signer dup wallet", good + app + strings.Replace(sig(""), `["w1"]`, `["w1", "w1"]`, 1), "signer[0].wallets[1]"},
		{"signer bad uid", good + app + sig("allowed_uids = [-1]\n"), "signer[0].allowed_uids[0]"},
		{"signer no key", good + app + strings.Replace(sig(""), `authorization_key = "k1"`, "", 1), "signer[0].authorization_key"},
		{"signer forward without chain", good + app + sig("other_methods = \"forward\"\n"), "signer[0].other_methods"},
		{"signer forward with chain", good + app + "[[chains]]\ncaip2 = \"eip155:1337\"\nrpc_url = \"http://127.0.0.1:8545\"\n" + sig("other_methods = \"forward\"\n"), ""},
		{"signer bad other methods", good + app + sig("other_methods = \"proxy\"\n"), "signer[0].other_methods"},
		{"signer unknown key", good + app + sig("wallet = \"w1\"\n"), "signer.wallet"},
		{"postgres ok", good + "[store]\nkind = \"postgres\"\ndsn = \"host=/run/pg dbname=c\"\npassword_file = \"" + pin + "\"\n", ""},
		{"postgres without dsn", good + "[store]\nkind = \"postgres\"\n", "store.dsn"},
		{"postgres password in url", good + "[store]\nkind = \"postgres\"\ndsn = \"postgres://u:hunter2@db/c\"\n", "store.dsn"},
		{"postgres password in dsn", good + "[store]\nkind = \"postgres\"\ndsn = \"host=db password=hunter2\"\n", "store.dsn"},
		{"postgres password file loose", good + "[store]\nkind = \"postgres\"\ndsn = \"host=db\"\npassword_file = \"" + loosePin + "\"\n", "store.password_file"},
		{"dsn without kind", good + "[store]\ndsn = \"host=db\"\n", "store.dsn"},
		{"bad store kind", good + "[store]\nkind = \"mysql\"\n", "store.kind"},
		{"syntax error", good + "[server\n", "(line 6)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "c.toml", tc.body, 0o600)
			_, err := Load(path)
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("unexpected problems: %v", err)
				}
				return
			}
			pe, ok := err.(*ProblemsError)
			if !ok {
				t.Fatalf("want *ProblemsError, got %v", err)
			}
			for _, p := range pe.Problems {
				if p.Key == tc.wantKey {
					return
				}
			}
			t.Fatalf("no problem for key %s in %v", tc.wantKey, pe.Problems)
		})
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "pin", "s3cr3t-pin\n", 0o600)
	got, err := ReadSecret(p, "")
	if err != nil || string(got) != "s3cr3t-pin" {
		t.Fatalf("ReadSecret = %q, %v", got, err)
	}
	t.Setenv("CACHET_TEST_PIN", "env-s3cr3t")
	if got, err := ReadSecret("", "CACHET_TEST_PIN"); err != nil || string(got) != "env-s3cr3t" {
		t.Fatalf("ReadSecret env = %q, %v", got, err)
	}
	// A config that inlines a secret has nowhere to put it: the key is unknown.
	path := writeFile(t, dir, "c.toml", "[backend.pkcs11]\npin = \"s3cr3t-pin\"\n", 0o600)
	_, err = Load(path)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pin") {
		t.Fatalf("inline pin: err = %v", err)
	}
	// Nor does a password written into the store's DSN.
	path = writeFile(t, dir, "c.toml", "[store]\nkind = \"postgres\"\ndsn = \"postgres://u:s3cr3t-pw@db/c\"\n", 0o600)
	if _, err = Load(path); err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("password in the dsn: err = %v", err)
	}
}

func TestAppSecret(t *testing.T) {
	app, secret, err := NewApp("test")
	if err != nil {
		t.Fatal(err)
	}
	if !app.CheckSecret(secret) || app.CheckSecret(secret+"x") || app.CheckSecret("") {
		t.Fatal("CheckSecret accepts the wrong secret or refuses the right one")
	}
	if strings.Contains(app.SecretHash, secret) || checkSecretHash(app.SecretHash) != nil {
		t.Fatalf("bad hash %q", app.SecretHash)
	}
}

// A config named by a relative path (cachet status --config
// .cachet/dev-pkcs11/cachet.toml) resolves its relative paths once, against
// the file's directory, and the results are absolute.
func TestRelativeConfigPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll(filepath.Join("a", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, data, base string }{
		{filepath.Join("a", "b", "cachet.toml"), "data_dir = \"data\"\n[backend.pkcs11]\npin_file = \"secrets/pin\"\n", filepath.Join(dir, "a", "b")},
		{"cachet.toml", "data_dir = \"data\"\n[backend.pkcs11]\npin_file = \"secrets/pin\"\n", dir},
	} {
		got, err := Parse(c.path, []byte(c.data))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct{ name, got, want string }{
			{"data_dir", got.DataDir, filepath.Join(c.base, "data")},
			{"store", got.Store.Path, filepath.Join(c.base, "data", "cachet.db")},
			{"tpm state", got.Backend.TPM.StateFile, filepath.Join(c.base, "data", "tpm-state.json")},
			{"pin_file", got.Backend.PKCS11.PINFile, filepath.Join(c.base, "secrets", "pin")},
		} {
			if p.got != p.want {
				t.Errorf("%s: %s is %s, want %s", c.path, p.name, p.got, p.want)
			}
		}
	}
}
