package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cachet-custody/cachet/jwtauth"
)

// Check returns every problem of the configuration, each with its key and
// reason, in file order as far as it can tell. It looks at the files the
// configuration names (module, secrets) but changes nothing.
func (c *Config) Check() []Problem {
	var ps []Problem
	add := func(key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	for _, k := range c.undec {
		add(k.String(), "unknown setting (misspelt, or in the wrong section?)")
	}

	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}

	s := c.Server
	if s.Socket == "" {
		add("server.socket", "must not be empty")
	} else if len(s.Socket) > 107 {
		add("server.socket", "path is %d bytes; a Unix socket path must be at most 107", len(s.Socket))
	}
	if m, err := strconv.ParseUint(s.SocketMode, 8, 32); err != nil || m > 0o777 {
		add("server.socket_mode", "%q is not an octal file mode like \"0660\"", s.SocketMode)
	} else if m&0o007 != 0 {
		add("server.socket_mode", "%q lets every local user connect; use group access (\"0660\") and allowed_gids", s.SocketMode)
	} else if m&0o600 != 0o600 {
		add("server.socket_mode", "%q denies the daemon's own user; the owner needs read and write (0600)", s.SocketMode)
	}
	if s.SocketGroup != "" && !validGroup(s.SocketGroup) {
		add("server.socket_group", "%q is not a group name or numeric gid", s.SocketGroup)
	}
	if ms := c.Metrics; ms.Socket != "" {
		if len(ms.Socket) > 107 {
			add("metrics.socket", "path is %d bytes; a Unix socket path must be at most 107", len(ms.Socket))
		} else if ms.Socket == s.Socket {
			add("metrics.socket", "is the API socket; metrics need a socket of their own")
		}
		if m, err := strconv.ParseUint(ms.SocketMode, 8, 32); err != nil || m > 0o777 {
			add("metrics.socket_mode", "%q is not an octal file mode like \"0660\"", ms.SocketMode)
		} else if m&0o600 != 0o600 {
			add("metrics.socket_mode", "%q denies the daemon's own user; the owner needs read and write (0600)", ms.SocketMode)
		}
		if ms.SocketGroup != "" && !validGroup(ms.SocketGroup) {
			add("metrics.socket_group", "%q is not a group name or numeric gid", ms.SocketGroup)
		}
	}
	if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("server.public_url", "%q is not an absolute http(s) URL like \"http://localhost\"", s.PublicURL)
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		add("server.public_url", "%q must not carry a query, fragment or user info", s.PublicURL)
	}
	for i, id := range s.AllowedUIDs {
		if id < 0 || id > 1<<32-2 {
			add(fmt.Sprintf("server.allowed_uids[%d]", i), "%d is not a uid", id)
		}
	}
	for _, l := range []struct {
		key  string
		kind string
		ids  []int
	}{{"server.allowed_gids", "gid", s.AllowedGIDs}, {"server.admin_uids", "uid", s.AdminUIDs}, {"server.admin_gids", "gid", s.AdminGIDs}} {
		for i, id := range l.ids {
			if id < 0 || id > 1<<32-2 {
				add(fmt.Sprintf("%s[%d]", l.key, i), "%d is not a %s", id, l.kind)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"server.read_header_timeout", s.ReadHeaderTimeout},
		{"server.read_timeout", s.ReadTimeout},
		{"server.write_timeout", s.WriteTimeout},
		{"server.idle_timeout", s.IdleTimeout},
		{"server.drain_timeout", s.DrainTimeout},
		{"audit.checkpoint_interval", c.Audit.CheckpointInterval},
		{"api.max_request_expiry", c.API.MaxRequestExpiry},
		{"api.idempotency_ttl", c.API.IdempotencyTTL},
	} {
		if d.v.Duration <= 0 {
			add(d.key, "must be a positive duration, like \"30s\"")
		}
	}
	if c.Rotation.ResealBatch < 1 || c.Rotation.ResealBatch > 100000 {
		add("rotation.reseal_batch", "%d is outside 1..100000", c.Rotation.ResealBatch)
	}
	if c.Rotation.ResealPause.Duration < 0 {
		add("rotation.reseal_pause", "must not be negative")
	}
	if s.MaxBodyBytes < 1024 || s.MaxBodyBytes > 64<<20 {
		add("server.max_body_bytes", "%d is outside 1024..67108864", s.MaxBodyBytes)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add("log.format", "%q is not one of json, text", c.Log.Format)
	}

	switch c.Backend.Kind {
	case KindPKCS11:
		p := c.Backend.PKCS11
		if p.Module == "" {
			add("backend.pkcs11.module", "must name the PKCS#11 module (.so)")
		} else if fi, err := os.Stat(p.Module); err != nil {
			add("backend.pkcs11.module", "%s", statReason(err))
		} else if fi.IsDir() {
			add("backend.pkcs11.module", "%q is a directory, not a module", p.Module)
		}
		if p.TokenLabel == "" || len(p.TokenLabel) > 32 {
			add("backend.pkcs11.token_label", "must be 1 to 32 characters (the PKCS#11 token label)")
		}
		if p.Sessions < 1 || p.Sessions > 64 {
			add("backend.pkcs11.sessions", "%d is outside 1..64", p.Sessions)
		}
		ps = append(ps, checkSecretRef("backend.pkcs11.pin", p.PINFile, p.PINEnv, true)...)
		for k := range p.ModuleEnv {
			if !envNameRE.MatchString(k) {
				add("backend.pkcs11.module_env."+k, "not an environment variable name")
			}
		}
	case KindTPM:
		t := c.Backend.TPM
		if !validTPMDevice(t.Device) {
			add("backend.tpm.device", "%q is not a device path, \"unix:PATH\" or \"tcp:HOST:PORT\"", t.Device)
		}
		seen := map[int]bool{}
		for i, p := range t.PCRs {
			if p < 0 || p > 23 {
				add(fmt.Sprintf("backend.tpm.pcrs[%d]", i), "%d is not a PCR index (0..23)", p)
			} else if seen[p] {
				add(fmt.Sprintf("backend.tpm.pcrs[%d]", i), "PCR %d is listed twice", p)
			}
			seen[p] = true
		}
		if t.Handle < 0x81000000 || t.Handle > 0x817FFFF0 {
			add("backend.tpm.handle", "0x%08X is not an owner persistent handle (0x81000000..0x817FFFF0)", t.Handle)
		}
		ps = append(ps, checkSecretRef("backend.tpm.auth", t.AuthFile, t.AuthEnv, false)...)
		if len(t.PCRs) == 0 && t.AuthFile == "" && t.AuthEnv == "" {
			add("backend.tpm.pcrs", "empty, and no auth value is set: anything on this machine could unseal the root; bind PCRs or set auth_file/auth_env")
		}
	default:
		add("backend.kind", "%q is not one of %q, %q", c.Backend.Kind, KindPKCS11, KindTPM)
	}

	switch c.Store.Kind {
	case StoreSQLite:
		if c.Store.DSN != "" {
			add("store.dsn", "set, but store.kind is %q; set kind = %q to use PostgreSQL", c.Store.Kind, StorePostgres)
		}
	case StorePostgres:
		if c.Store.DSN == "" {
			add("store.dsn", "required with kind = %q (a libpq connection string or postgres:// URL, without the password)", StorePostgres)
		} else if strings.Contains(strings.ToLower(c.Store.DSN), "password=") || dsnHasPassword(c.Store.DSN) {
			add("store.dsn", "holds a password; put it in store.password_file or store.password_env, never in the config")
		}
		ps = append(ps, checkSecretRef("store.password", c.Store.PasswordFile, c.Store.PasswordEnv, false)...)
	default:
		add("store.kind", "%q is not one of %q, %q", c.Store.Kind, StoreSQLite, StorePostgres)
	}
	if c.Store.MaxBatch < 1 || c.Store.MaxBatch > 10000 {
		add("store.max_batch", "%d is outside 1..10000", c.Store.MaxBatch)
	}
	if c.Store.Readers < 1 || c.Store.Readers > 64 {
		add("store.readers", "%d is outside 1..64", c.Store.Readers)
	}
	if c.Audit.CheckpointRecords < 1 {
		add("audit.checkpoint_records", "must be at least 1")
	}

	if d := c.API.UserKeyLifetime.Duration; d < time.Minute || d > 24*time.Hour {
		add("api.user_key_lifetime", "%s is outside 1m..24h", d)
	}
	if c.API.MaxUserKeys < 1 || c.API.MaxUserKeys > 1000 {
		add("api.max_user_keys", "%d is outside 1..1000", c.API.MaxUserKeys)
	}
	if d := c.API.ImportKeyLifetime.Duration; d < time.Minute || d > time.Hour {
		add("api.import_key_lifetime", "%s is outside 1m..1h", d)
	}
	for key, v := range map[string]int{
		"embedded_wallets.recover_limit_per_user":      c.Embedded.RecoverLimitPerUser,
		"embedded_wallets.recover_limit_per_wallet":    c.Embedded.RecoverLimitPerWallet,
		"embedded_wallets.auth_share_limit_per_wallet": c.Embedded.AuthShareLimitPerWallet,
	} {
		if v < 1 || v > 100000 {
			add(key, "%d is outside 1..100000", v)
		}
	}
	if d := c.Embedded.RateWindow.Duration; d < time.Second || d > 7*24*time.Hour {
		add("embedded_wallets.rate_window", "%s is outside 1s..168h", d)
	}
	if d := c.Embedded.ChallengeLifetime.Duration; d < 10*time.Second || d > time.Hour {
		add("embedded_wallets.challenge_lifetime", "%s is outside 10s..1h", d)
	}
	if c.AuthKeys.RatePerSecond <= 0 || c.AuthKeys.RatePerSecond > 1e6 {
		add("authorization_keys.rate_per_second", "%v is outside (0, 1000000]", c.AuthKeys.RatePerSecond)
	}
	if c.AuthKeys.Burst < 1 || c.AuthKeys.Burst > 1e6 {
		add("authorization_keys.burst", "%d is outside 1..1000000", c.AuthKeys.Burst)
	}
	if c.API.MaxRequestExpiry.Duration > 30*24*time.Hour {
		add("api.max_request_expiry", "%s is more than 30 days; a signed request should not stay valid that long", c.API.MaxRequestExpiry)
	}
	chains := map[string]int{}
	for i, ch := range c.Chains {
		key := fmt.Sprintf("chains[%d]", i)
		if !caip2RE.MatchString(ch.CAIP2) {
			add(key+".caip2", "%q is not an EVM CAIP-2 chain id like \"eip155:1\"", ch.CAIP2)
		} else if j, dup := chains[ch.CAIP2]; dup {
			add(key+".caip2", "%q is also chains[%d].caip2", ch.CAIP2, j)
		} else {
			chains[ch.CAIP2] = i
		}
		if u, err := url.Parse(ch.RPCURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(key+".rpc_url", "%q is not an http(s) JSON-RPC URL", ch.RPCURL)
		}
	}

	ids := map[string]int{}
	for i, a := range c.Apps {
		key := fmt.Sprintf("apps[%d]", i)
		if !appIDRE.MatchString(a.ID) {
			add(key+".id", "%q is not an app id (1-64 of [A-Za-z0-9_-])", a.ID)
		} else if j, dup := ids[a.ID]; dup {
			add(key+".id", "%q is also apps[%d].id", a.ID, j)
		} else {
			ids[a.ID] = i
		}
		if err := checkSecretHash(a.SecretHash); err != nil {
			add(key+".secret_hash", "%v", err)
		}
		if a.Name != "" && len(a.Name) > 200 {
			add(key+".name", "longer than 200 characters")
		}
		if a.JWT != nil {
			ps := a.JWT.Settings().Validate()
			for _, p := range ps {
				add(key+".jwt."+p.Field, "%s", p.Reason)
			}
			// A key file that does not load is a problem now, not at the
			// first user's login. (A jwks_url is not fetched here.)
			if len(ps) == 0 {
				if _, err := jwtauth.New(a.JWT.Settings(), jwtauth.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
					field := "jwks_file"
					if a.JWT.PublicKeyFile != "" {
						field = "public_key_file"
					}
					add(key+".jwt."+field, "%v", err)
				}
			}
		}
	}
	ps = append(ps, c.checkSigners(ids, chains)...)
	return ps
}

// checkSigners validates the [[signer]] endpoints; apps and chains are the
// configured app ids and CAIP-2 chains.
func (c *Config) checkSigners(apps, chains map[string]int) []Problem {
	var ps []Problem
	add := func(key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	names := map[string]int{}
	sockets := map[string]string{c.Server.Socket: "server.socket"}
	for i, e := range c.Signers {
		key := fmt.Sprintf("signer[%d]", i)
		if !appIDRE.MatchString(e.Name) {
			add(key+".name", "%q is not an endpoint name (1-64 of [A-Za-z0-9_-])", e.Name)
		} else if j, dup := names[e.Name]; dup {
			add(key+".name", "%q is also signer[%d].name", e.Name, j)
		} else {
			names[e.Name] = i
		}
		switch {
		case e.Socket == "":
			add(key+".socket", "must not be empty")
		case len(e.Socket) > 107:
			add(key+".socket", "path is %d bytes; a Unix socket path must be at most 107", len(e.Socket))
		case sockets[e.Socket] != "":
			add(key+".socket", "%q is also %s", e.Socket, sockets[e.Socket])
		default:
			sockets[e.Socket] = key + ".socket"
		}
		if m, err := strconv.ParseUint(e.Mode(), 8, 32); err != nil || m > 0o777 {
			add(key+".socket_mode", "%q is not an octal file mode like \"0660\"", e.SocketMode)
		} else if m&0o007 != 0 {
			add(key+".socket_mode", "%q lets every local user connect; use group access (\"0660\") and allowed_gids", e.SocketMode)
		} else if m&0o600 != 0o600 {
			add(key+".socket_mode", "%q denies the daemon's own user; the owner needs read and write (0600)", e.SocketMode)
		}
		if e.SocketGroup != "" && !validGroup(e.SocketGroup) {
			add(key+".socket_group", "%q is not a group name or numeric gid", e.SocketGroup)
		}
		if _, ok := apps[e.App]; !ok {
			add(key+".app", "%q is not the id of an app in [[apps]]", e.App)
		}
		if !caip2RE.MatchString(e.CAIP2) {
			add(key+".caip2", "%q is not an EVM CAIP-2 chain id like \"eip155:1\"", e.CAIP2)
		}
		if len(e.Wallets) == 0 {
			add(key+".wallets", "lists no wallet; an endpoint exposes the wallets listed here and no other")
		} else if len(e.Wallets) > 1000 {
			add(key+".wallets", "lists %d wallets; at most 1000", len(e.Wallets))
		}
		seen := map[string]int{}
		for j, w := range e.Wallets {
			wk := fmt.Sprintf("%s.wallets[%d]", key, j)
			if !walletIDRE.MatchString(w) {
				add(wk, "%q is not a wallet id", w)
			} else if k, dup := seen[w]; dup {
				add(wk, "%q is also %s.wallets[%d]", w, key, k)
			} else {
				seen[w] = j
			}
		}
		for _, l := range []struct {
			key  string
			kind string
			ids  []int
		}{{key + ".allowed_uids", "uid", e.AllowedUIDs}, {key + ".allowed_gids", "gid", e.AllowedGIDs}} {
			for j, id := range l.ids {
				if id < 0 || id > 1<<32-2 {
					add(fmt.Sprintf("%s[%d]", l.key, j), "%d is not a %s", id, l.kind)
				}
			}
		}
		if !walletIDRE.MatchString(e.AuthorizationKey) {
			add(key+".authorization_key", "%q is not the id of an authorization key (`cachet` creates them with POST /v1/authorization_keys)", e.AuthorizationKey)
		}
		switch e.OtherMethods {
		case "", OtherMethodsRefuse:
		case OtherMethodsForward:
			if _, ok := chains[e.CAIP2]; !ok && caip2RE.MatchString(e.CAIP2) {
				add(key+".other_methods", "\"forward\" needs a [[chains]] entry for %s to forward to", e.CAIP2)
			}
		default:
			add(key+".other_methods", "%q is neither \"refuse\" nor \"forward\"", e.OtherMethods)
		}
	}
	return ps
}

var (
	walletIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	appIDRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	caip2RE    = regexp.MustCompile(`^eip155:[1-9][0-9]{0,18}$`)
	envNameRE  = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	groupRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}\$?$`)
)

func validGroup(g string) bool {
	if _, err := strconv.ParseUint(g, 10, 32); err == nil {
		return true
	}
	return groupRE.MatchString(g)
}

func validTPMDevice(d string) bool {
	switch {
	case strings.HasPrefix(d, "unix:"):
		return len(d) > len("unix:")
	case strings.HasPrefix(d, "tcp:"):
		hp := strings.TrimPrefix(d, "tcp:")
		i := strings.LastIndexByte(hp, ':')
		if i <= 0 {
			return false
		}
		p, err := strconv.Atoi(hp[i+1:])
		return err == nil && p > 0 && p < 65536
	default:
		return strings.HasPrefix(d, "/")
	}
}

func statReason(err error) string {
	if os.IsNotExist(err) {
		return "file does not exist: " + err.(*os.PathError).Path
	}
	return err.Error()
}

// checkSecretRef checks a pair of <name>_file / <name>_env settings: at most
// one of them is set (exactly one when required), the file exists and only
// its owner can read it, the variable is set.
func checkSecretRef(key, file, env string, required bool) []Problem {
	var ps []Problem
	switch {
	case file != "" && env != "":
		ps = append(ps, Problem{key + "_file", "both " + key + "_file and " + key + "_env are set; set one"})
	case file == "" && env == "" && required:
		ps = append(ps, Problem{key + "_file", "set " + key + "_file (a file holding the secret) or " + key + "_env (an environment variable holding it); secrets are never written in the config"})
	case file != "":
		fi, err := os.Stat(file)
		switch {
		case err != nil:
			ps = append(ps, Problem{key + "_file", statReason(err)})
		case !fi.Mode().IsRegular():
			ps = append(ps, Problem{key + "_file", file + " is not a regular file"})
		case fi.Mode().Perm()&0o077 != 0:
			ps = append(ps, Problem{key + "_file", fmt.Sprintf("%s has mode %04o; a secret file must be readable by its owner only (chmod 600)", file, fi.Mode().Perm())})
		}
	case env != "":
		if _, ok := os.LookupEnv(env); !ok {
			ps = append(ps, Problem{key + "_env", fmt.Sprintf("environment variable %s is not set", env)})
		}
	}
	return ps
}

// dsnHasPassword reports whether a postgres:// URL carries a password.
func dsnHasPassword(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}
