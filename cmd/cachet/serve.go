package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/daemon"
	"github.com/cachet-custody/cachet/devmode"
	"github.com/cachet-custody/cachet/keys"
)

func runServe(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("serve")
	cfgPath := fs.config
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	return serve(ctx, cfg)
}

func serve(ctx context.Context, cfg *config.Config) error {
	procs := daemonProcs()
	// The database must exist (`cachet init` or `cachet restore` made
	// it): serving a fresh, empty one where it went missing would lose
	// everything acknowledged.
	a, err := openWith(ctx, cfg, openOptions{mustExist: true})
	if err != nil {
		return err
	}
	defer a.Close()
	// An unfinished rotation is re-sealed in the background while the
	// daemon serves, once the appliance is known to be the right one.
	if ceremony.CheckReady(ctx, a.backend, a.store) == nil {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		startReseal(rctx, a)
	}
	a.log.Info("scheduler", "gomaxprocs", procs, "cpus", runtime.NumCPU())
	return daemon.Run(ctx, daemon.RunOptions{Config: cfg, Backend: a.backend, Store: a.store, Logger: a.log, Version: version})
}

var setProcs sync.Once

// daemonProcs gives the daemon twice as many Ps as the CPUs Go would use
// (its cgroup-aware default), unless GOMAXPROCS is set, and returns the
// number in force.
//
// Why: most of a request's latency is in cgo calls that block (SQLite's
// fsynced COMMIT on the single writer, PKCS#11, SQLite reads). A goroutine
// whose cgo call outlasts sysmon's ~20 µs loses its P, and on return, with
// every P busy running request handlers, it waits in the global run queue.
// For the writer that wait comes once per group commit, so commits stay
// small and each request pays more of one. With spare Ps the call goes on
// at once and the kernel shares the cores among the threads. Measured on 2
// cores (BENCHMARKS.md, "The scheduler"): at 64 clients the appliance's
// CPU per signature fell 15-18 % and the clients' by half, throughput rose
// by a third, p99 halved; 4 and 8 Ps were alike, 16 no better.
func daemonProcs() int {
	setProcs.Do(func() {
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
		}
	})
	return runtime.GOMAXPROCS(0)
}

func runDev(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return runDevToken(args[1:], out)
	}
	if len(args) > 0 && args[0] == "seed" {
		return runDevSeed(ctx, args[1:], out)
	}
	fs := newFlags("dev")
	dir := fs.String("dir", "", "directory of the dev appliance (created on first use)")
	backend := fs.String("backend", "", "pkcs11 (SoftHSM) or tpm (swtpm); default pkcs11, or what DIR was set up with")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the daemon to this file when it stops (for BENCHMARKS.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*prof)
	if err != nil {
		return err
	}
	defer stopProfile()
	if *dir == "" {
		return usageError{"--dir DIR is required"}
	}
	env, err := prepareDev(ctx, *dir, *backend, out)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Fprintf(out, "cachet dev: serving %s on %s (Ctrl-C stops)\n%s", env.Dir, env.App.Socket, env.Hint())
	if f, ok := out.(*os.File); ok {
		f.Sync()
	}
	return serve(ctx, env.Config)
}

// runDevToken prints a user JWT signed by the dev appliance's identity
// provider, for trying users, user keys and embedded wallets.
func runDevToken(args []string, out io.Writer) error {
	fs := newFlags("dev token")
	dir := fs.String("dir", "", "directory of the dev appliance")
	sub := fs.String("sub", "", "the user's custom_user_id (the JWT's sub)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *sub == "" {
		return usageError{"--dir DIR and --sub USER are required"}
	}
	tok, err := devmode.Token(*dir, *sub, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

// prepareDev sets up (first run) or reuses the dev appliance in dir.
func prepareDev(ctx context.Context, dir, backend string, out io.Writer) (*devmode.Env, error) {
	return devmode.Prepare(ctx, devmode.Options{
		Dir: dir, Backend: backend, Out: out,
		Open: func(ctx context.Context, cfg *config.Config) (keys.Backend, error) {
			return openBackend(ctx, cfg, newLogger(cfg.Log), openOptions{})
		},
	})
}

// startCPUProfile profiles the process into path until stop ("" does
// nothing): the dev tools' --cpuprofile.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
