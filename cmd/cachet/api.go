package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/keys"
)

func runApp(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return usageError{"usage: cachet app create [--name NAME]"}
	}
	fs := newFlags("app create")
	name := fs.String("name", "", "a name for the app, shown in the config")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	app, secret, err := config.NewApp(*name)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "app id:     %s\napp secret: %s\n\nThe secret is shown once and stored nowhere. Add the app to the config:\n\n[[apps]]\nid = %q\nname = %q\nsecret_hash = %q\n",
		app.ID, secret, app.ID, app.Name, app.SecretHash)
	return nil
}

const keysUsage = `usage:
  cachet keys generate [--out FILE]                 a P-256 key pair for your own use
  cachet keys create --body JSON                     an authorization key held by the appliance (administrators)
  cachet keys list | get ID | delete ID
  cachet keys sign --key ID --method M --url URL [--body JSON|@FILE] [--header name=value ...]
                                                     sign a request with an appliance-held key; prints the signature
(connection: --app-file FILE or $CACHET_APP_FILE)`

func runKeys(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{keysUsage}
	}
	switch args[0] {
	case "generate":
	case "sign":
		return runKeysSign(ctx, args[1:], out)
	default:
		return runResource("keys", authKeyCommands)(ctx, args, out)
	}
	fs := newFlags("keys generate")
	outFile := fs.String("out", "", "write the private key to this file (mode 0600) instead of printing it")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := client.EncodePrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := keys.PublicKeySPKI(&k.PublicKey)
	if err != nil {
		return err
	}
	if *outFile != "" {
		f, err := os.OpenFile(*outFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(f, priv); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(out, "public key (base64 DER SPKI): %s\nprivate key written to %s\n", pub, *outFile)
		return nil
	}
	fmt.Fprintf(out, "private key (base64 PKCS#8): %s\npublic key (base64 DER SPKI): %s\n", priv, pub)
	return nil
}

// apiFlags are the connection flags of the wallet and quorum commands.
type apiFlags struct {
	appFile  *string
	authKeys listFlag
	body     *string
	idem     *string
}

func newAPIFlags(name string) (*apiFlags, func(args []string) ([]string, error)) {
	fs := newFlags(name)
	a := &apiFlags{
		appFile: fs.String("app-file", os.Getenv("CACHET_APP_FILE"), "app.json with app_id, app_secret, socket, public_url (default $CACHET_APP_FILE)"),
		body:    fs.String("body", "", "request body (JSON), or @FILE"),
		idem:    fs.String("idempotency-key", "", "privy-idempotency-key"),
	}
	fs.Var(&a.authKeys, "auth-key", "sign the request with this P-256 key file (base64 PKCS#8); repeat for each signer")
	return a, func(args []string) ([]string, error) {
		// Flags may come before or after the resource id, as people type
		// them: the flag package stops at the first positional argument,
		// so parsing resumes after each one.
		var positional []string
		for {
			if err := fs.Parse(args); err != nil {
				return nil, err
			}
			if fs.NArg() == 0 {
				break
			}
			positional = append(positional, fs.Arg(0))
			args = fs.Args()[1:]
		}
		if *a.appFile == "" {
			return nil, usageError{"--app-file FILE (or $CACHET_APP_FILE) is required"}
		}
		return positional, nil
	}
}

func (a *apiFlags) do(ctx context.Context, out io.Writer, method, path string) error {
	c, err := client.FromAppFile(*a.appFile)
	if err != nil {
		return err
	}
	var ks []*ecdsa.PrivateKey
	for _, f := range a.authKeys {
		k, err := client.ReadPrivateKeyFile(f)
		if err != nil {
			return err
		}
		ks = append(ks, k)
	}
	req := client.Request{Method: method, Path: path, Keys: ks, IdempotencyKey: *a.idem}
	if *a.body != "" {
		body, err := readBody(*a.body)
		if err != nil {
			return err
		}
		req.Body = body
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	var pretty any
	if json.Unmarshal(resp.Body, &pretty) == nil {
		return printJSON(out, pretty)
	}
	_, err = out.Write(resp.Body)
	return err
}

// resourceCommand is one verb of `cachet wallet` or `cachet quorum`.
type resourceCommand struct {
	verb   string
	method string
	path   string // with %s for the id, if it takes one
	usage  string
}

var walletCommands = []resourceCommand{
	{"create", http.MethodPost, "/v1/wallets", "create --body JSON"},
	{"get", http.MethodGet, "/v1/wallets/%s", "get ID"},
	{"list", http.MethodGet, "/v1/wallets", "list [--body '{\"cursor\":..,\"limit\":..}']"},
	{"update", http.MethodPatch, "/v1/wallets/%s", "update ID --body JSON --auth-key FILE ..."},
	{"archive", http.MethodPost, "/v1/wallets/%s/archive", "archive ID --auth-key FILE ..."},
	{"rpc", http.MethodPost, "/v1/wallets/%s/rpc", "rpc ID --body JSON --auth-key FILE ..."},
	{"raw-sign", http.MethodPost, "/v1/wallets/%s/raw_sign", "raw-sign ID --body JSON --auth-key FILE ..."},
}

var authKeyCommands = []resourceCommand{
	{"create", http.MethodPost, "/v1/authorization_keys", "create --body '{\"display_name\":..,\"allowed_callers\":{\"uids\":[..]},\"allowed_requests\":[\"POST /v1/wallets/*/rpc\"]}'"},
	{"list", http.MethodGet, "/v1/authorization_keys", "list"},
	{"get", http.MethodGet, "/v1/authorization_keys/%s", "get ID"},
	{"delete", http.MethodDelete, "/v1/authorization_keys/%s", "delete ID"},
}

// runKeysSign asks the appliance to sign a request with one of its keys and
// prints the base64 DER signature, for privy-authorization-signature.
func runKeysSign(ctx context.Context, args []string, out io.Writer) error {
	a, parseArgs := newAPIFlags("keys sign")
	key := os.Getenv("CACHET_AUTH_KEY")
	var method, url string
	var headers listFlag
	rest := []string{}
	// The sign flags are parsed first, the connection flags from what is left.
	for i := 0; i < len(args); i++ {
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", usageError{args[i] + " needs a value"}
			}
			i++
			return args[i], nil
		}
		var err error
		switch args[i] {
		case "--key", "-key":
			key, err = next()
		case "--method", "-method":
			method, err = next()
		case "--url", "-url":
			url, err = next()
		case "--header", "-header":
			var h string
			if h, err = next(); err == nil {
				headers = append(headers, h)
			}
		default:
			rest = append(rest, args[i])
		}
		if err != nil {
			return err
		}
	}
	if _, err := parseArgs(rest); err != nil {
		return err
	}
	if key == "" || method == "" || url == "" {
		return usageError{"--key ID, --method and --url are required"}
	}
	hdr := map[string]string{}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			return usageError{fmt.Sprintf("--header %q: want name=value", h)}
		}
		hdr[strings.ToLower(k)] = v
	}
	c, err := client.FromAppFile(*a.appFile)
	if err != nil {
		return err
	}
	if _, ok := hdr["privy-app-id"]; !ok {
		hdr["privy-app-id"] = c.AppID
	}
	body := json.RawMessage(`""`)
	if *a.body != "" {
		if body, err = readBody(*a.body); err != nil {
			return err
		}
	}
	resp, err := c.Do(ctx, client.Request{Method: http.MethodPost, Path: "/v1/authorization_keys/" + key + "/sign",
		Body: map[string]any{"method": method, "url": url, "body": body, "headers": hdr}})
	if err != nil {
		return err
	}
	var sig struct{ Signature string }
	if err := json.Unmarshal(resp.Body, &sig); err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, sig.Signature)
	return err
}

var quorumCommands = []resourceCommand{
	{"create", http.MethodPost, "/v1/key_quorums", "create --body JSON"},
	{"get", http.MethodGet, "/v1/key_quorums/%s", "get ID"},
	{"update", http.MethodPatch, "/v1/key_quorums/%s", "update ID --body JSON --auth-key FILE ..."},
	{"delete", http.MethodDelete, "/v1/key_quorums/%s", "delete ID --auth-key FILE ..."},
}

func runResource(name string, cmds []resourceCommand) func(context.Context, []string, io.Writer) error {
	return func(ctx context.Context, args []string, out io.Writer) error {
		usage := func() error {
			var b strings.Builder
			for _, c := range cmds {
				fmt.Fprintf(&b, "\n  cachet %s %s", name, c.usage)
			}
			return usageError{"usage:" + b.String() + "\n(connection: --app-file FILE or $CACHET_APP_FILE)"}
		}
		if len(args) == 0 {
			return usage()
		}
		for _, c := range cmds {
			if c.verb != args[0] {
				continue
			}
			a, parseArgs := newAPIFlags(name + " " + c.verb)
			rest, err := parseArgs(args[1:])
			if err != nil {
				return err
			}
			path := c.path
			if strings.Contains(path, "%s") {
				if len(rest) != 1 {
					return usageError{fmt.Sprintf("usage: cachet %s %s", name, c.usage)}
				}
				path = fmt.Sprintf(path, url.PathEscape(rest[0]))
			} else if len(rest) != 0 {
				return usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
			}
			if c.method == http.MethodGet && *a.body != "" {
				// A list takes its query as a JSON object of parameters.
				var q map[string]any
				if err := json.Unmarshal([]byte(*a.body), &q); err != nil {
					return usageError{"--body must be a JSON object of query parameters"}
				}
				vals := url.Values{}
				for k, v := range q {
					vals.Set(k, fmt.Sprint(v))
				}
				path += "?" + vals.Encode()
				*a.body = ""
			}
			return a.do(ctx, out, c.method, path)
		}
		return usage()
	}
}

// readBody reads a --body flag: JSON, or @FILE holding it.
func readBody(b string) (json.RawMessage, error) {
	if strings.HasPrefix(b, "@") {
		raw, err := os.ReadFile(b[1:])
		if err != nil {
			return nil, err
		}
		b = string(raw)
	}
	if !json.Valid([]byte(b)) {
		return nil, usageError{"--body is not valid JSON"}
	}
	return json.RawMessage(b), nil
}
