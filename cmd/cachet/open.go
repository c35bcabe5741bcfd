package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/tpm"
)

// openOptions are the few ways a command opens hardware differently.
type openOptions struct {
	// forReplace opens a TPM whose root it cannot unseal, for `restore
	// --replace` to re-seal it.
	forReplace bool
	// mustExist refuses a missing database instead of creating an empty
	// one (audit verify, status).
	mustExist bool
}

// freezeEnv names a file that, while it exists, blocks the store's writer
// before each commit, as a frozen disk would. It is a test hook for the
// fault tests (a blocked writer only fails closed), never set in
// production.
const freezeEnv = "CACHET_TEST_STORE_FREEZE_FILE"

func freezeHook() func() {
	path := os.Getenv(freezeEnv)
	if path == "" {
		return nil
	}
	return func() {
		for {
			if _, err := os.Stat(path); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// openBackend opens the key backend the configuration selects. With two
// backends a plain switch is clearer than a registry.
func openBackend(ctx context.Context, cfg *config.Config, log *slog.Logger, o openOptions) (keys.Backend, error) {
	switch cfg.Backend.Kind {
	case config.KindPKCS11:
		c := cfg.Backend.PKCS11
		pin, err := c.PIN()
		if err != nil {
			return nil, fmt.Errorf("HSM PIN: %w", err)
		}
		defer clear(pin)
		for k, v := range c.ModuleEnv {
			if err := os.Setenv(k, v); err != nil {
				return nil, fmt.Errorf("backend.pkcs11.module_env.%s: %w", k, err)
			}
		}
		return hsm.Open(ctx, hsm.Options{Module: c.Module, TokenLabel: c.TokenLabel, PIN: string(pin), Sessions: c.Sessions, Logger: log})
	case config.KindTPM:
		c := cfg.Backend.TPM
		auth, err := c.Auth()
		if err != nil {
			return nil, fmt.Errorf("TPM auth value: %w", err)
		}
		defer clear(auth)
		return tpm.Open(ctx, tpm.Options{Device: c.Device, PCRs: c.PCRs, Auth: auth, Handle: c.Handle, StateFile: c.StateFile, Logger: log, AllowLocked: o.forReplace})
	}
	return nil, fmt.Errorf("unknown backend kind %q", cfg.Backend.Kind)
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// appliance is an open backend and store.
type appliance struct {
	cfg     *config.Config
	log     *slog.Logger
	backend keys.Backend
	store   *store.Store
}

func (a *appliance) Close() error {
	var errs []error
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	if a.backend != nil {
		errs = append(errs, a.backend.Close())
	}
	return errors.Join(errs...)
}

// openAppliance loads the config and opens the backend and the store.
func openAppliance(ctx context.Context, cfgPath string, o openOptions) (*appliance, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	return openWith(ctx, cfg, o)
}

func openWith(ctx context.Context, cfg *config.Config, o openOptions) (*appliance, error) {
	a := &appliance{cfg: cfg, log: newLogger(cfg.Log)}
	var err error
	if a.backend, err = openBackend(ctx, cfg, a.log, o); err != nil {
		return nil, err
	}
	if a.store, err = openStore(ctx, cfg, store.Options{MaxBatch: cfg.Store.MaxBatch, Readers: cfg.Store.Readers, Logger: a.log, MustExist: o.mustExist, BeforeCommit: freezeHook()}); err != nil {
		a.backend.Close()
		return nil, err
	}
	// Key format 2 keeps the wrapped backups of P-256 keys in the store.
	if u, ok := a.backend.(keys.WrappedKeysUser); ok {
		u.UseWrappedKeys(a.store)
	}
	return a, nil
}
