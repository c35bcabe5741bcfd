// Command cachet is the Cachet custody daemon and its operator tools.
//
// This file and its siblings parse flags and wire packages together; the
// logic lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, out io.Writer) error
}

var commands = []command{
	{"serve", "serve --config FILE                  run the daemon", runServe},
	{"dev", "dev --dir DIR [--backend pkcs11|tpm]   set up (first run) and serve a self-contained dev appliance\n  cachet dev token --dir DIR --sub USER [--ttl 1h]\n                                        a user JWT from the dev appliance's identity provider\n  cachet dev seed --dir DIR --wallets N [--kind imported|hd]\n                                        add N wallets to a stopped dev appliance (scale benchmarks)", runDev},
	{"init", "init --config FILE --operator KEY ... --threshold M --out DIR\n                                        generate the root, provision the hardware, write m-of-n operator shares", runInit},
	{"restore", "restore --config FILE --share FILE ... --identity FILE ... [--prompt N] [--replace] [--backup FILE]\n                                        provision new hardware with the root from m shares (and install a backup first)", runRestore},
	{"rotate", "rotate --config FILE --operator KEY ... --threshold M --out DIR --share FILE ... --identity FILE ... [--prompt N]\n                                        a new root generation and operator set; the daemon re-seals in the background\n  cachet rotate --finish --config FILE  remove the old generation once nothing refers to it", runRotate},
	{"backup", "backup --config FILE (--out FILE | --out-dir DIR [--keep N])\n                                        an online, checksummed snapshot of the store (no secret in clear)", runBackup},
	{"status", "status --config FILE [--json]         backend, root, key generations, store and audit state", runStatus},
	{"audit", "audit verify --config FILE [--public-key KEY] [--json]\n                                        check the audit chain and every checkpoint signature;\n  cachet audit export --config FILE [--since SEQ] [--format jsonl]\n                                        the records after SEQ as JSON lines, each with its hash", runAudit},
	{"config", "config check FILE                     report every problem of a config file", runConfig},
	{"app", "app create [--name NAME]              print a new app id and secret, and its config entry", runApp},
	{"keys", "keys generate [--out FILE]            a new P-256 authorization key pair (base64 PKCS#8 / SPKI)", runKeys},
	{"wallet", "wallet create|get|list|update|archive|rpc|raw-sign ...  call the wallet API (see cachet wallet)", runResource("wallet", walletCommands)},
	{"device", "device create|recover|set-recovery|sign-message ...  the device's part of an embedded wallet (see cachet device)", runDevice},
	{"quorum", "quorum create|get|update|delete ...   call the key quorum API (see cachet quorum)", runResource("quorum", quorumCommands)},
	{"version", "version                               print the version", func(context.Context, []string, io.Writer) error {
		fmt.Println("cachet", version)
		return nil
	}},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: cachet COMMAND [flags]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintln(w, "  cachet "+c.usage)
	}
}

// usageError makes main exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	for _, c := range commands {
		if c.name != os.Args[1] {
			continue
		}
		err := c.run(ctx, os.Args[2:], os.Stdout)
		if err == nil {
			return
		}
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(os.Stderr, "cachet %s: %v\n", c.name, err)
			}
			os.Exit(2)
		}
		// A package named like the command prefixes its errors with its
		// name too ("device: ..."); say it once.
		fmt.Fprintf(os.Stderr, "cachet %s: %s\n", c.name, strings.TrimPrefix(err.Error(), c.name+": "))
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "cachet: unknown command %q\n\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(2)
}

// exitError carries a specific exit status.
type exitError struct {
	error
	code int
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("cachet "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

// parse parses args and refuses stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// configFlags is the flag set of a command that works on an appliance: it
// takes the other flags plus a required --config FILE.
type configFlags struct {
	*flag.FlagSet
	config *string
}

func newConfigFlags(name string) configFlags {
	fs := newFlags(name)
	return configFlags{FlagSet: fs, config: fs.String("config", "", "config file")}
}

// parse parses args and requires --config.
func (f configFlags) parse(args []string) error {
	if err := parse(f.FlagSet, args); err != nil {
		return err
	}
	if *f.config == "" {
		return usageError{"--config FILE is required"}
	}
	return nil
}
