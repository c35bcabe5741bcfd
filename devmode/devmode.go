// Package devmode sets up a complete, self-contained Cachet appliance in one
// directory for development and first tries: a SoftHSM2 token with its own
// SOFTHSM2_CONF (or a swtpm that it starts and stops itself), a config file,
// three operator identities with a 2-of-3 init, and one app whose id and
// secret are written to DIR/app.json. Run again on the same directory, it
// reuses what is there.
//
// It also makes a dev identity provider (an Ed25519 key in DIR/idp that the
// app's [apps.jwt] trusts, and Token to sign user JWTs with it), so users,
// user keys and embedded wallets work out of the box.
//
// Everything secret in DIR (PINs, operator identities, the app secret, the
// dev IdP's key) is
// there in the clear, mode 0600: a dev appliance protects nothing and must
// never hold real funds.
package devmode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/simhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// OpenFunc opens the key backend a configuration names. cmd/cachet passes
// its own, so the choice of backend stays in one place.
type OpenFunc func(ctx context.Context, cfg *config.Config) (keys.Backend, error)

// Options configures Prepare.
type Options struct {
	Dir     string
	Backend string // config.KindPKCS11 or config.KindTPM; "" reuses DIR's
	Open    OpenFunc
	Logger  *slog.Logger
	Out     io.Writer // where the first-run summary goes
}

// AppFile is DIR/app.json: how a client reaches the dev appliance.
type AppFile struct {
	AppID     string `json:"app_id"`
	AppSecret string `json:"app_secret"`
	Socket    string `json:"socket"`
	PublicURL string `json:"public_url"`
	Config    string `json:"config"`
}

// state is DIR/dev.json.
type state struct {
	Backend  string    `json:"backend"`
	Complete bool      `json:"complete"`
	Created  time.Time `json:"created"`
}

// Env is a prepared dev appliance.
type Env struct {
	Dir        string
	ConfigPath string
	Config     *config.Config
	App        AppFile
	swtpm      *simhw.Swtpm
}

// Close stops the swtpm that Prepare started, if any.
func (e *Env) Close() error {
	if e.swtpm != nil {
		return e.swtpm.Stop()
	}
	return nil
}

const (
	tokenLabel = "cachet-dev"
	stateFile  = "dev.json"
)

// Prepare sets DIR up on first use (including `cachet init`), or checks and
// reuses an earlier setup, and leaves the hardware running: SOFTHSM2_CONF is
// set in this process, or swtpm is started. The caller serves with
// Env.Config and calls Env.Close when done.
func Prepare(ctx context.Context, o Options) (_ *Env, err error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	env := &Env{Dir: dir, ConfigPath: filepath.Join(dir, "cachet.toml")}
	defer func() {
		if err != nil {
			env.Close()
		}
	}()
	var st state
	b, rerr := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case rerr == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
		}
		if !st.Complete {
			return nil, fmt.Errorf("%s holds a setup that an earlier run did not finish; remove the directory and run again", dir)
		}
		if o.Backend != "" && o.Backend != st.Backend {
			return nil, fmt.Errorf("%s is a %s appliance; use another --dir for --backend %s", dir, st.Backend, o.Backend)
		}
		if err := env.startHardware(st.Backend); err != nil {
			return nil, err
		}
		if err := env.load(); err != nil {
			return nil, err
		}
		o.Logger.Info("dev appliance reused", "dir", dir, "backend", st.Backend)
		return env, nil
	case !errors.Is(rerr, os.ErrNotExist):
		return nil, rerr
	}

	kind := o.Backend
	if kind == "" {
		kind = config.KindPKCS11
	}
	if kind != config.KindPKCS11 && kind != config.KindTPM {
		return nil, fmt.Errorf("--backend %q: want %s or %s", kind, config.KindPKCS11, config.KindTPM)
	}
	if n := len(filepath.Join(dir, "tpm", "tpm.sock")); n > 107 {
		return nil, fmt.Errorf("%s is too long for the sockets inside it (%d > 107 bytes); use a shorter --dir", dir, n)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty and holds no dev appliance; use an empty or new directory", dir)
	}
	st = state{Backend: kind, Created: time.Now().UTC()}
	if err := writeJSON(filepath.Join(dir, stateFile), st); err != nil {
		return nil, err
	}
	if err := env.create(ctx, kind, o); err != nil {
		return nil, fmt.Errorf("set up dev appliance in %s: %w", dir, err)
	}
	st.Complete = true
	if err := writeJSON(filepath.Join(dir, stateFile), st); err != nil {
		return nil, err
	}
	return env, nil
}

func (e *Env) path(p ...string) string { return filepath.Join(append([]string{e.Dir}, p...)...) }

// startHardware makes the backend reachable: SoftHSM through SOFTHSM2_CONF
// (read by the module when it is first initialized in this process), or a
// swtpm child on the state in DIR/tpm.
func (e *Env) startHardware(kind string) error {
	switch kind {
	case config.KindPKCS11:
		return os.Setenv("SOFTHSM2_CONF", e.path("softhsm", "softhsm2.conf"))
	case config.KindTPM:
		e.swtpm = simhw.NewSwtpm(e.path("tpm"), 0)
		return e.swtpm.Start()
	}
	return fmt.Errorf("unknown backend %q", kind)
}

func (e *Env) load() error {
	cfg, err := config.Load(e.ConfigPath)
	if err != nil {
		return err
	}
	e.Config = cfg
	b, err := os.ReadFile(e.path("app.json"))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, &e.App)
}

func (e *Env) create(ctx context.Context, kind string, o Options) error {
	for _, d := range []string{"secrets", "operators", "shares", "data"} {
		if err := os.MkdirAll(e.path(d), 0o700); err != nil {
			return err
		}
	}
	backendSection := ""
	switch kind {
	case config.KindPKCS11:
		if _, err := simhw.WriteSoftHSMConf(e.path("softhsm")); err != nil {
			return err
		}
		if err := e.startHardware(kind); err != nil {
			return err
		}
		pin, soPIN := randomHex(8), randomHex(8)
		if err := os.WriteFile(e.path("secrets", "hsm-pin"), []byte(pin+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(e.path("secrets", "hsm-so-pin"), []byte(soPIN+"\n"), 0o600); err != nil {
			return err
		}
		if err := hsm.InitToken(simhw.SoftHSMModule(), tokenLabel, soPIN, pin); err != nil {
			return fmt.Errorf("initialize SoftHSM token: %w", err)
		}
		backendSection = fmt.Sprintf("[backend]\nkind = \"pkcs11\"\n\n[backend.pkcs11]\nmodule = %q\ntoken_label = %q\npin_file = \"secrets/hsm-pin\"\nmodule_env = { SOFTHSM2_CONF = %q }\n",
			simhw.SoftHSMModule(), tokenLabel, e.path("softhsm", "softhsm2.conf"))
	case config.KindTPM:
		if err := e.startHardware(kind); err != nil {
			return err
		}
		backendSection = fmt.Sprintf("[backend]\nkind = \"tpm\"\n\n[backend.tpm]\ndevice = %q\n# swtpm resets its PCRs at each start; a real TPM binds boot state (PCR 7).\npcrs = [7]\n", e.swtpm.Device)
	}

	app, secret, err := config.NewApp("dev")
	if err != nil {
		return err
	}
	jwtSection, err := e.writeIdP(app.ID)
	if err != nil {
		return err
	}
	cfgText := fmt.Sprintf(`# Cachet dev appliance (cachet dev). Not for real funds: every secret of
# this appliance is in this directory.
data_dir = "data"

[server]
socket = %q
socket_mode = "0600"
allowed_uids = [%d]

[log]
format = "text"

%s
[[apps]]
id = %q
name = "dev"
secret_hash = %q
%s`, e.path("cachet.sock"), os.Getuid(), backendSection, app.ID, app.SecretHash, jwtSection)
	if err := os.WriteFile(e.ConfigPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(e.ConfigPath)
	if err != nil {
		return err
	}
	e.Config = cfg

	var operators []string
	for i := 1; i <= 3; i++ {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return err
		}
		keyFile := e.path("operators", fmt.Sprintf("operator-%d.key", i))
		pubFile := e.path("operators", fmt.Sprintf("operator-%d.pub", i))
		body := fmt.Sprintf("# dev operator %d (cachet dev)\n# public key: %s\n%s\n", i, id.Recipient(), id)
		if err := os.WriteFile(keyFile, []byte(body), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(pubFile, []byte(id.Recipient().String()+"\n"), 0o644); err != nil {
			return err
		}
		operators = append(operators, pubFile)
	}

	backend, err := o.Open(ctx, cfg)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Store.Path, store.Options{Logger: o.Logger})
	if err != nil {
		return errors.Join(err, backend.Close())
	}
	res, err := ceremony.Init(ctx, backend, st, ceremony.InitOptions{
		Operators: operators, Threshold: 2, OutDir: e.path("shares"), Actor: fmt.Sprintf("dev uid=%d", os.Getuid()),
	})
	if err := errors.Join(err, st.Close(), backend.Close()); err != nil {
		return err
	}

	e.App = AppFile{AppID: app.ID, AppSecret: secret, Socket: cfg.Server.Socket, PublicURL: cfg.Server.PublicURL, Config: e.ConfigPath}
	if err := writeJSON(e.path("app.json"), e.App); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "cachet dev: new %s appliance in %s\n  root fingerprint %s (2-of-3 shares in %s, operator keys in %s)\n  app credentials in %s\n",
		kind, e.Dir, res.Fingerprint, e.path("shares"), e.path("operators"), e.path("app.json"))
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Hint returns how to reach the appliance, for the first lines of output.
func (e *Env) Hint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  curl --unix-socket %s http://localhost/healthz\n", e.App.Socket)
	fmt.Fprintf(&b, "  curl --unix-socket %s -u %s:$(jq -r .app_secret %s) -H 'privy-app-id: %s' http://localhost/v1/status\n",
		e.App.Socket, e.App.AppID, e.path("app.json"), e.App.AppID)
	fmt.Fprintf(&b, "  cachet wallet create --app-file %s --body '{\"chain_type\":\"ethereum\"}'\n", e.path("app.json"))
	fmt.Fprintf(&b, "  cachet dev token --dir %s --sub alice > alice.jwt   (a user JWT from the dev identity provider)\n", e.Dir)
	fmt.Fprintf(&b, "  cachet audit verify --config %s   (with the daemon stopped)\n", e.ConfigPath)
	return b.String()
}
