// Package config owns Cachet's configuration file: its TOML schema, the
// default of every setting, strict decoding (an unknown key is a problem, not
// a silent no-op), validation that names the key and the reason, and the
// reading of secrets that the file only points at.
//
// Secrets (the HSM PIN, the TPM auth value) never appear in the file itself:
// a setting names a file or an environment variable that holds them. App
// secrets appear only as hashes.
//
// Every setting, with its default, is documented in cachet.example.toml next
// to this file; a test keeps the two in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration file.
type Config struct {
	// DataDir holds the store and the TPM state file unless their own
	// settings say otherwise.
	DataDir  string        `toml:"data_dir"`
	Server   Server        `toml:"server"`
	Log      Log           `toml:"log"`
	Metrics  Metrics       `toml:"metrics"`
	Backend  Backend       `toml:"backend"`
	Store    Store         `toml:"store"`
	Audit    Audit         `toml:"audit"`
	API      API           `toml:"api"`
	AuthKeys AuthKeys      `toml:"authorization_keys"`
	Embedded Embedded      `toml:"embedded_wallets"`
	Rotation Rotation      `toml:"rotation"`
	Apps     []App         `toml:"apps"`
	Chains   []Chain       `toml:"chains"`
	Signers  []Signer      `toml:"signer"`
	path     string        // the file this was read from, for relative paths
	undec    []toml.Key    // keys the schema does not know
	meta     toml.MetaData // for "was this key set"
}

// Metrics configures the Prometheus metrics socket (package metrics). It is
// a socket of its own so that a local Prometheus agent can scrape without
// app credentials and without access to the API socket.
type Metrics struct {
	// Socket is the Unix socket serving GET /metrics; empty serves none.
	Socket      string `toml:"socket"`
	SocketMode  string `toml:"socket_mode"`
	SocketGroup string `toml:"socket_group"`
}

// Server configures the HTTP API on the Unix socket.
type Server struct {
	Socket            string   `toml:"socket"`
	SocketMode        string   `toml:"socket_mode"`
	SocketGroup       string   `toml:"socket_group"`
	PublicURL         string   `toml:"public_url"`
	AllowedUIDs       []int    `toml:"allowed_uids"`
	AllowedGIDs       []int    `toml:"allowed_gids"`
	AdminUIDs         []int    `toml:"admin_uids"`
	AdminGIDs         []int    `toml:"admin_gids"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	DrainTimeout      Duration `toml:"drain_timeout"`
	MaxBodyBytes      int64    `toml:"max_body_bytes"`
}

// Log configures log/slog output on standard error.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Backend selects and configures the key backend.
type Backend struct {
	Kind   string `toml:"kind"`
	PKCS11 PKCS11 `toml:"pkcs11"`
	TPM    TPM    `toml:"tpm"`
}

// PKCS11 configures the HSM backend.
type PKCS11 struct {
	Module     string `toml:"module"`
	TokenLabel string `toml:"token_label"`
	PINFile    string `toml:"pin_file"`
	PINEnv     string `toml:"pin_env"`
	Sessions   int    `toml:"sessions"`
	// ModuleEnv is set in the process environment before the module is
	// loaded: many modules read their own configuration from there
	// (SoftHSM2 reads SOFTHSM2_CONF).
	ModuleEnv map[string]string `toml:"module_env"`
}

// TPM configures the TPM 2.0 backend.
type TPM struct {
	Device    string `toml:"device"`
	PCRs      []int  `toml:"pcrs"`
	AuthFile  string `toml:"auth_file"`
	AuthEnv   string `toml:"auth_env"`
	Handle    uint32 `toml:"handle"`
	StateFile string `toml:"state_file"`
}

// Store configures the store: the embedded SQLite file (kind "sqlite",
// the default) or a PostgreSQL database several appliances share (kind
// "postgres").
type Store struct {
	Kind     string `toml:"kind"`
	Path     string `toml:"path"`
	MaxBatch int    `toml:"max_batch"`
	Readers  int    `toml:"readers"`
	// DSN is the PostgreSQL connection string or URL, without its
	// password: that comes from PasswordFile or PasswordEnv.
	DSN          string `toml:"dsn"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
	// Appliance names this appliance in the cluster (default: the host
	// name).
	Appliance string `toml:"appliance"`
	// CheckBeforeServing runs PRAGMA quick_check before the daemon serves
	// (start-up then grows with the database: 3.6 s at a million wallets)
	// instead of while it serves, with the release gate closing if it
	// finds corruption.
	CheckBeforeServing bool `toml:"check_before_serving"`
}

// Store kinds.
const (
	StoreSQLite   = "sqlite"
	StorePostgres = "postgres"
)

// Audit configures the audit log's signed checkpoints.
type Audit struct {
	CheckpointInterval Duration `toml:"checkpoint_interval"`
	CheckpointRecords  int      `toml:"checkpoint_records"`
}

// Rotation tunes the background re-seal after `cachet rotate`.
type Rotation struct {
	// ResealBatch is the number of blobs re-sealed per store transaction.
	ResealBatch int `toml:"reseal_batch"`
	// ResealPause is slept between batches, to leave the hardware to
	// requests; 0 re-seals as fast as the hardware allows.
	ResealPause Duration `toml:"reseal_pause"`
}

// API configures request handling of the /v1 API.
type API struct {
	// MaxRequestExpiry is how far in the future privy-request-expiry may
	// be; a signed request without an expiry is remembered (and refused if
	// replayed) for this long.
	MaxRequestExpiry Duration `toml:"max_request_expiry"`
	// IdempotencyTTL is how long an idempotency key and its response are
	// kept.
	IdempotencyTTL Duration `toml:"idempotency_ttl"`
	// UserKeyLifetime is how long a user key issued for a user's JWT
	// approves (never past the JWT's own exp).
	UserKeyLifetime Duration `toml:"user_key_lifetime"`
	// MaxUserKeys is how many live user keys one user may hold; issuing
	// another revokes the oldest.
	MaxUserKeys int `toml:"max_user_keys"`
	// ImportKeyLifetime is how long the one-time key of a wallet import
	// waits for its submit.
	ImportKeyLifetime Duration `toml:"import_key_lifetime"`
}

// AuthKeys configures the appliance's own authorization keys.
type AuthKeys struct {
	// RatePerSecond and Burst bound how fast one key signs (a token
	// bucket per key).
	RatePerSecond float64 `toml:"rate_per_second"`
	Burst         int     `toml:"burst"`
}

// Embedded configures embedded wallets: rate limits on releases of their
// shares, and the life of a challenge.
type Embedded struct {
	RecoverLimitPerUser     int      `toml:"recover_limit_per_user"`
	RecoverLimitPerWallet   int      `toml:"recover_limit_per_wallet"`
	AuthShareLimitPerWallet int      `toml:"auth_share_limit_per_wallet"`
	RateWindow              Duration `toml:"rate_window"`
	ChallengeLifetime       Duration `toml:"challenge_lifetime"`
}

// Chain is a JSON-RPC endpoint that eth_sendTransaction broadcasts through.
type Chain struct {
	CAIP2  string `toml:"caip2"`
	RPCURL string `toml:"rpc_url"`
}

// Signer is a JSON-RPC signer endpoint (package signer): a Unix socket
// speaking Ethereum's JSON-RPC (geth --signer, ethers, viem, web3) whose
// signing calls become wallet API requests of App, approved by the
// appliance-held AuthorizationKey on the caller's behalf.
type Signer struct {
	// Name identifies the endpoint in logs and audit records.
	Name        string `toml:"name"`
	Socket      string `toml:"socket"`
	SocketMode  string `toml:"socket_mode"` // "" means "0660"
	SocketGroup string `toml:"socket_group"`
	App         string `toml:"app"`
	// CAIP2 is the chain the endpoint serves (eth_chainId; broadcasts and
	// forwarded calls go through this chain's [[chains]] node).
	CAIP2 string `toml:"caip2"`
	// Wallets are the ids of the wallets the endpoint exposes; every other
	// wallet is invisible through it.
	Wallets          []string `toml:"wallets"`
	AllowedUIDs      []int    `toml:"allowed_uids"`
	AllowedGIDs      []int    `toml:"allowed_gids"`
	AuthorizationKey string   `toml:"authorization_key"`
	// OtherMethods is what happens to a method the endpoint does not
	// implement: "refuse" (the default) or "forward" to the chain's node.
	OtherMethods string `toml:"other_methods"`
}

// Signer endpoint settings' values.
const (
	OtherMethodsRefuse  = "refuse"
	OtherMethodsForward = "forward"
)

// Mode is the socket's file mode, "0660" when unset. Check has validated it.
func (s Signer) Mode() string {
	if s.SocketMode == "" {
		return "0660"
	}
	return s.SocketMode
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration like \"30s\" or \"5m\": %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Backend kinds.
const (
	KindPKCS11 = "pkcs11"
	KindTPM    = "tpm"
)

// DefaultTPMHandle is the persistent handle of the sealed root, generation 1.
const DefaultTPMHandle = 0x81000C01

// Default returns the configuration a file with no settings means.
func Default() Config {
	return Config{
		DataDir: "/var/lib/cachet",
		Server: Server{
			Socket:            "/run/cachet/cachet.sock",
			SocketMode:        "0660",
			PublicURL:         "http://localhost",
			AllowedUIDs:       []int{},
			AllowedGIDs:       []int{},
			AdminUIDs:         []int{},
			AdminGIDs:         []int{},
			ReadHeaderTimeout: Duration{5 * time.Second},
			ReadTimeout:       Duration{30 * time.Second},
			WriteTimeout:      Duration{60 * time.Second},
			IdleTimeout:       Duration{120 * time.Second},
			DrainTimeout:      Duration{30 * time.Second},
			MaxBodyBytes:      1 << 20,
		},
		Log:     Log{Level: "info", Format: "json"},
		Metrics: Metrics{SocketMode: "0660"},
		Backend: Backend{
			Kind: KindPKCS11,
			PKCS11: PKCS11{
				Module:     "/usr/lib/softhsm/libsofthsm2.so",
				TokenLabel: "cachet",
				Sessions:   2,
				ModuleEnv:  map[string]string{},
			},
			TPM: TPM{
				Device: "/dev/tpmrm0",
				PCRs:   []int{7},
				Handle: DefaultTPMHandle,
			},
		},
		Store: Store{Kind: StoreSQLite, MaxBatch: 128, Readers: 4},
		Audit: Audit{CheckpointInterval: Duration{5 * time.Minute}, CheckpointRecords: 1000},
		API: API{MaxRequestExpiry: Duration{24 * time.Hour}, IdempotencyTTL: Duration{24 * time.Hour},
			UserKeyLifetime: Duration{15 * time.Minute}, MaxUserKeys: 20, ImportKeyLifetime: Duration{10 * time.Minute}},
		AuthKeys: AuthKeys{RatePerSecond: 100, Burst: 200},
		Rotation: Rotation{ResealBatch: 256},
		Embedded: Embedded{RecoverLimitPerUser: 10, RecoverLimitPerWallet: 5, AuthShareLimitPerWallet: 120,
			RateWindow: Duration{time.Hour}, ChallengeLifetime: Duration{5 * time.Minute}},
		Apps:    []App{},
		Chains:  []Chain{},
		Signers: []Signer{},
	}
}

// Problem is one thing wrong with a configuration: the key it concerns and
// why.
type Problem struct {
	Key    string
	Reason string
}

func (p Problem) String() string { return p.Key + ": " + p.Reason }

// ProblemsError is returned by Load when the file has problems.
type ProblemsError struct {
	Path     string
	Problems []Problem
}

func (e *ProblemsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem(s)", e.Path, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Parse decodes a configuration without validating it. Syntax errors come
// back as a single problem with the position the TOML parser reports.
func Parse(path string, data []byte) (*Config, error) {
	c := Default()
	// The default lists are replaced, not merged, when the file sets them.
	c.Server.AllowedUIDs, c.Server.AllowedGIDs, c.Backend.TPM.PCRs, c.Apps, c.Chains, c.Signers = nil, nil, nil, nil, nil, nil
	c.Server.AdminUIDs, c.Server.AdminGIDs = nil, nil
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		var perr toml.ParseError
		key := "(syntax)"
		if errors.As(err, &perr) {
			key = fmt.Sprintf("(line %d)", perr.Position.Line)
			err = errors.New(perr.Message)
		}
		return nil, &ProblemsError{Path: path, Problems: []Problem{{Key: key, Reason: err.Error()}}}
	}
	d := Default()
	if !md.IsDefined("server", "allowed_uids") {
		c.Server.AllowedUIDs = d.Server.AllowedUIDs
	}
	if !md.IsDefined("server", "allowed_gids") {
		c.Server.AllowedGIDs = d.Server.AllowedGIDs
	}
	if !md.IsDefined("server", "admin_uids") {
		c.Server.AdminUIDs = d.Server.AdminUIDs
	}
	if !md.IsDefined("server", "admin_gids") {
		c.Server.AdminGIDs = d.Server.AdminGIDs
	}
	if !md.IsDefined("backend", "tpm", "pcrs") {
		c.Backend.TPM.PCRs = d.Backend.TPM.PCRs
	}
	if c.Apps == nil {
		c.Apps = []App{}
	}
	if c.Chains == nil {
		c.Chains = []Chain{}
	}
	if c.Signers == nil {
		c.Signers = []Signer{}
	}
	c.path, c.undec, c.meta = path, md.Undecoded(), md
	c.resolvePaths()
	return &c, nil
}

// Load reads, decodes and validates the file at path. It returns a
// *ProblemsError listing every problem when there is any.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	if ps := c.Check(); len(ps) > 0 {
		return nil, &ProblemsError{Path: path, Problems: ps}
	}
	return c, nil
}

// Path is the file the configuration was read from ("" if built in code).
func (c *Config) Path() string { return c.path }

// resolvePaths fills the paths that default to a place under data_dir and
// makes relative paths relative to the config file's directory, so a config
// and its data can move together.
func (c *Config) resolvePaths() {
	base := "."
	if c.path != "" {
		base = filepath.Dir(c.path)
	}
	// Absolute, so that a path made from another (the store under
	// data_dir) is not joined to the base a second time: with
	// --config .cachet/dev/cachet.toml the store was looked for under
	// .cachet/dev/.cachet/dev/data.
	if b, err := filepath.Abs(base); err == nil {
		base = b
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.DataDir = abs(c.DataDir)
	if c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "cachet.db")
	}
	if c.Backend.TPM.StateFile == "" {
		c.Backend.TPM.StateFile = filepath.Join(c.DataDir, "tpm-state.json")
	}
	c.Store.Path = abs(c.Store.Path)
	c.Backend.TPM.StateFile = abs(c.Backend.TPM.StateFile)
	c.Server.Socket = abs(c.Server.Socket)
	c.Metrics.Socket = abs(c.Metrics.Socket)
	for i := range c.Signers {
		c.Signers[i].Socket = abs(c.Signers[i].Socket)
	}
	c.Backend.PKCS11.PINFile = abs(c.Backend.PKCS11.PINFile)
	c.Store.PasswordFile = abs(c.Store.PasswordFile)
	c.Backend.TPM.AuthFile = abs(c.Backend.TPM.AuthFile)
	for _, a := range c.Apps {
		if a.JWT != nil {
			a.JWT.JWKSFile = abs(a.JWT.JWKSFile)
			a.JWT.PublicKeyFile = abs(a.JWT.PublicKeyFile)
		}
	}
}

// SocketFileMode is Metrics.SocketMode as a file mode. Check has validated it.
func (m Metrics) SocketFileMode() os.FileMode {
	v, _ := strconv.ParseUint(m.SocketMode, 8, 32)
	return os.FileMode(v)
}

// SocketFileMode is Server.SocketMode as a file mode. Check has validated it.
func (s Server) SocketFileMode() os.FileMode {
	v, _ := strconv.ParseUint(s.SocketMode, 8, 32)
	return os.FileMode(v)
}

// RPCURL returns the JSON-RPC endpoint configured for a CAIP-2 chain id.
func (c *Config) RPCURL(caip2 string) (string, bool) {
	for _, ch := range c.Chains {
		if ch.CAIP2 == caip2 {
			return ch.RPCURL, true
		}
	}
	return "", false
}

// PublicBase returns the public base URL without a trailing slash.
func (s Server) PublicBase() string { return strings.TrimRight(s.PublicURL, "/") }

// PublicHost returns the host (and port) of the public base URL: requests
// whose Host header differs are refused.
func (s Server) PublicHost() string {
	u, err := url.Parse(s.PublicURL)
	if err != nil {
		return ""
	}
	return u.Host
}
