package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/device"
	"github.com/cachet-custody/cachet/recovery"
)

const deviceUsage = `usage:
  cachet device create --jwt-file F --recovery automatic|password|cloud --device FILE [--password-file P] [--cloud-file C]
  cachet device recover --wallet ID --jwt-file F --device FILE [--password-file P] [--cloud-file C]
  cachet device set-recovery --device FILE --jwt-file F --recovery automatic|password|cloud [--password-file P] [--cloud-file C]
  cachet device sign-message --device FILE --jwt-file F --message TEXT
The device's part of an embedded wallet, as a reference client: --device FILE (mode 0600) stands for the
device's secure storage, --cloud-file for the user's cloud account (a 32-byte secret, base64), and the
password is read from the first line of --password-file or, at a terminal, asked for.
(connection: --app-file FILE or $CACHET_APP_FILE; user JWT: --jwt-file FILE or $CACHET_USER_JWT)`

func runDevice(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{deviceUsage}
	}
	switch args[0] {
	case "create":
		return runDeviceCreate(ctx, args[1:], out)
	case "recover":
		return runDeviceRecover(ctx, args[1:], out)
	case "set-recovery":
		return runDeviceSetRecovery(ctx, args[1:], out)
	case "sign-message":
		return runDeviceSignMessage(ctx, args[1:], out)
	}
	return usageError{deviceUsage}
}

// deviceFlags are the flags the device commands share.
type deviceFlags struct {
	fs                                 *flag.FlagSet
	appFile, jwtFile, device           *string
	method, passwordFile, cloudFile    *string
	wallet, message                    *string
	needMethod, needWallet, needSecret bool
}

func newDeviceFlags(verb string) *deviceFlags {
	fs := newFlags("device " + verb)
	f := &deviceFlags{fs: fs,
		appFile: fs.String("app-file", os.Getenv("CACHET_APP_FILE"), "app.json with app_id, app_secret, socket, public_url (default $CACHET_APP_FILE)"),
		jwtFile: fs.String("jwt-file", "", "a file holding the user's JWT (default: $CACHET_USER_JWT)"),
		device:  fs.String("device", "", "the device file (mode 0600): the device's secure storage"),
	}
	switch verb {
	case "create", "set-recovery":
		f.method = fs.String("recovery", "", "recovery method: automatic, password or cloud")
		f.needMethod, f.needSecret = true, true
	case "recover":
		f.wallet = fs.String("wallet", "", "the embedded wallet's id")
		f.needWallet, f.needSecret = true, true
	case "sign-message":
		f.message = fs.String("message", "", "the message to sign (personal_sign, utf-8)")
	}
	if f.needSecret {
		f.passwordFile = fs.String("password-file", "", "read the password from the first line of this file (default: ask at the terminal)")
		f.cloudFile = fs.String("cloud-file", "", "the user's cloud account: the file holding the cloud recovery secret (base64)")
	}
	return f
}

// parse parses args and checks the required flags; it returns the client
// and the user's JWT.
func (f *deviceFlags) parse(args []string) (*client.Client, string, error) {
	if err := parse(f.fs, args); err != nil {
		return nil, "", err
	}
	switch {
	case *f.device == "":
		return nil, "", usageError{"--device FILE is required"}
	case f.needMethod && !recovery.ValidMethod(*f.method):
		return nil, "", usageError{"--recovery must be automatic, password or cloud"}
	case f.needWallet && *f.wallet == "":
		return nil, "", usageError{"--wallet ID is required"}
	case f.message != nil && *f.message == "":
		return nil, "", usageError{"--message TEXT is required"}
	case *f.appFile == "":
		return nil, "", usageError{"--app-file FILE (or $CACHET_APP_FILE) is required"}
	}
	jwt := os.Getenv("CACHET_USER_JWT")
	if *f.jwtFile != "" {
		b, err := os.ReadFile(*f.jwtFile)
		if err != nil {
			return nil, "", err
		}
		jwt = strings.TrimSpace(string(b))
		if jwt == "" {
			return nil, "", fmt.Errorf("%s: empty", *f.jwtFile)
		}
	}
	if jwt == "" {
		return nil, "", usageError{"--jwt-file FILE (or $CACHET_USER_JWT) is required"}
	}
	c, err := client.FromAppFile(*f.appFile)
	if err != nil {
		return nil, "", err
	}
	return c, jwt, nil
}

// secretToSeal gathers what method needs to seal a recovery share: a new
// password, typed twice at a terminal, or the cloud secret (made and
// written to --cloud-file when that does not exist yet).
func (f *deviceFlags) secretToSeal(method string) (device.Secret, error) {
	var s device.Secret
	var err error
	switch method {
	case recovery.MethodPassword:
		s.Password, err = readPassword(*f.passwordFile, true)
	case recovery.MethodCloud:
		if *f.cloudFile == "" {
			return s, usageError{"--cloud-file FILE is required with --recovery cloud"}
		}
		s.CloudSecret, err = cloudSecretToSeal(*f.cloudFile)
	}
	return s, err
}

// secretToOpen gathers what a wallet's method needs to open its recovery
// share.
func (f *deviceFlags) secretToOpen(method, walletID string) (device.Secret, error) {
	var s device.Secret
	var err error
	switch method {
	case recovery.MethodPassword:
		s.Password, err = readPassword(*f.passwordFile, false)
	case recovery.MethodCloud:
		if *f.cloudFile == "" {
			return s, usageError{"--cloud-file FILE is required: wallet " + walletID + " uses cloud recovery"}
		}
		s.CloudSecret, err = readCloudSecret(*f.cloudFile)
	}
	return s, err
}

func clearSecret(s device.Secret) {
	clear(s.Password)
	clear(s.CloudSecret)
}

// refuseExisting refuses, before anything is asked of the server, a device
// file that already exists: Save would refuse it only after the wallet's
// shares were released.
func refuseExisting(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists; a device file is never overwritten (it may hold the only device share of a wallet)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// walletJSON is what create, recover and set-recovery print.
type walletJSON struct {
	WalletID       string `json:"wallet_id"`
	Address        string `json:"address"`
	RecoveryMethod string `json:"recovery_method"`
	Status         string `json:"status"`
}

func printState(out io.Writer, st *device.State) error {
	return printJSON(out, walletJSON{st.WalletID, st.Address, st.RecoveryMethod, st.Status})
}

func runDeviceCreate(ctx context.Context, args []string, out io.Writer) error {
	f := newDeviceFlags("create")
	c, jwt, err := f.parse(args)
	if err != nil {
		return err
	}
	if err := refuseExisting(*f.device); err != nil {
		return err
	}
	s, err := f.secretToSeal(*f.method)
	if err != nil {
		return err
	}
	defer clearSecret(s)
	st, err := device.Create(ctx, c, jwt, *f.method, s)
	if st != nil {
		// The device share exists nowhere else: keep it even when the
		// upload of the recovery share failed.
		if serr := st.Save(*f.device); serr != nil {
			return errors.Join(err, fmt.Errorf("wallet %s: the device share could not be saved to %s: %w", st.WalletID, *f.device, serr))
		}
	}
	if err != nil {
		if st != nil {
			return fmt.Errorf("%w\nthe device file %s was written; finish with: cachet device set-recovery --device %s --recovery %s", err, *f.device, *f.device, *f.method)
		}
		return err
	}
	return printState(out, st)
}

func runDeviceRecover(ctx context.Context, args []string, out io.Writer) error {
	f := newDeviceFlags("recover")
	c, jwt, err := f.parse(args)
	if err != nil {
		return err
	}
	if err := refuseExisting(*f.device); err != nil {
		return err
	}
	// The method says which secret to ask for; no share is released yet.
	w, err := device.Lookup(ctx, c, *f.wallet)
	if err != nil {
		return err
	}
	if w.Status != device.StatusActive {
		return fmt.Errorf("wallet %s is %s: its first device has not uploaded its recovery share yet", w.ID, w.Status)
	}
	s, err := f.secretToOpen(w.RecoveryMethod, w.ID)
	if err != nil {
		return err
	}
	defer clearSecret(s)
	st, err := device.Recover(ctx, c, w.ID, jwt, s)
	if err != nil {
		return err
	}
	if err := st.Save(*f.device); err != nil {
		return err
	}
	return printState(out, st)
}

func runDeviceSetRecovery(ctx context.Context, args []string, out io.Writer) error {
	f := newDeviceFlags("set-recovery")
	c, jwt, err := f.parse(args)
	if err != nil {
		return err
	}
	st, err := device.Load(*f.device)
	if err != nil {
		return err
	}
	s, err := f.secretToSeal(*f.method)
	if err != nil {
		return err
	}
	defer clearSecret(s)
	if err := device.SetRecovery(ctx, c, st, jwt, *f.method, s); err != nil {
		return err
	}
	if err := st.Replace(*f.device); err != nil {
		return fmt.Errorf("wallet %s now has %s recovery, but %s could not be updated: %w", st.WalletID, st.RecoveryMethod, *f.device, err)
	}
	return printState(out, st)
}

func runDeviceSignMessage(ctx context.Context, args []string, out io.Writer) error {
	f := newDeviceFlags("sign-message")
	c, jwt, err := f.parse(args)
	if err != nil {
		return err
	}
	st, err := device.Load(*f.device)
	if err != nil {
		return err
	}
	sig, err := device.SignMessage(ctx, c, st, jwt, []byte(*f.message))
	if err != nil {
		return err
	}
	return printJSON(out, struct {
		Address   string `json:"address"`
		Signature string `json:"signature"`
	}{st.Address, sig})
}

// readPassword reads the first line of file, or asks at the terminal (twice
// when confirm, as for a new password).
func readPassword(file string, confirm bool) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		defer clear(b)
		line, _, _ := bytes.Cut(b, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return nil, fmt.Errorf("%s: the first line (the password) is empty", file)
		}
		return bytes.Clone(line), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, usageError{"the wallet's recovery needs a password: give --password-file FILE, or run at a terminal to type it"}
	}
	ask := func(prompt string) ([]byte, error) {
		fmt.Fprint(os.Stderr, prompt)
		p, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return p, err
	}
	p, err := ask("Recovery password: ")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty password")
	}
	if confirm {
		again, err := ask("Again: ")
		defer clear(again)
		if err != nil {
			clear(p)
			return nil, err
		}
		if !bytes.Equal(p, again) {
			clear(p)
			return nil, errors.New("the two passwords differ")
		}
	}
	return p, nil
}

// readCloudSecret reads the cloud secret in path: standard base64 of
// recovery.CloudSecretSize bytes.
func readCloudSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	text := bytes.TrimSpace(b)
	s := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(s, text)
	if err != nil || n != recovery.CloudSecretSize {
		clear(s)
		return nil, fmt.Errorf("%s does not hold a cloud secret (base64 of %d bytes)", path, recovery.CloudSecretSize)
	}
	return s[:n:n], nil
}

// cloudSecretToSeal returns the cloud secret in path, or makes one and
// writes it there (mode 0600) before anything is sealed with it. A file
// that exists and holds no valid secret is never overwritten.
func cloudSecretToSeal(path string) ([]byte, error) {
	if _, err := os.Lstat(path); err == nil {
		s, err := readCloudSecret(path)
		if err != nil {
			return nil, fmt.Errorf("%w; refusing to overwrite it", err)
		}
		return s, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	s, err := recovery.NewCloudSecret()
	if err != nil {
		return nil, err
	}
	fail := func(err error) ([]byte, error) { clear(s); return nil, err }
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(err)
	}
	text := make([]byte, base64.StdEncoding.EncodedLen(len(s))+1)
	defer clear(text)
	base64.StdEncoding.Encode(text, s)
	text[len(text)-1] = '\n'
	if _, err := w.Write(text); err != nil {
		w.Close()
		os.Remove(path)
		return fail(err)
	}
	if err := w.Sync(); err != nil {
		w.Close()
		os.Remove(path)
		return fail(err)
	}
	if err := w.Close(); err != nil {
		os.Remove(path)
		return fail(err)
	}
	return s, nil
}
