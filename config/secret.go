package config

import (
	"bytes"
	"fmt"
	"os"
)

// ReadSecret returns the secret that a <name>_file / <name>_env pair points
// at, without its trailing newline, or nil when neither is set. The error
// names the file or variable, never the value.
func ReadSecret(file, env string) ([]byte, error) {
	switch {
	case file != "" && env != "":
		return nil, fmt.Errorf("both a secret file and a secret environment variable are set")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read secret file: %w", err)
		}
		v := bytes.TrimRight(b, "\r\n")
		out := bytes.Clone(v)
		clear(b)
		if len(out) == 0 {
			return nil, fmt.Errorf("secret file %s is empty", file)
		}
		return out, nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return nil, fmt.Errorf("environment variable %s is not set", env)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// PIN returns the HSM user PIN.
func (p PKCS11) PIN() ([]byte, error) {
	b, err := ReadSecret(p.PINFile, p.PINEnv)
	if err == nil && b == nil {
		err = fmt.Errorf("backend.pkcs11: no pin_file or pin_env")
	}
	return b, err
}

// Auth returns the TPM auth value, or nil when none is configured.
func (t TPM) Auth() ([]byte, error) { return ReadSecret(t.AuthFile, t.AuthEnv) }

// Password returns the PostgreSQL password, or nil when none is configured
// (the DSN's own, or a method that needs none).
func (s Store) Password() ([]byte, error) { return ReadSecret(s.PasswordFile, s.PasswordEnv) }
