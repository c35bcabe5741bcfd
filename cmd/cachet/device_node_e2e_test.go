package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// An independent device client (tests/node/device.test.mjs, JavaScript
// written from the README's device protocol alone) provisions, recovers and
// changes the recovery method of an embedded wallet with each method,
// against a dev appliance and a JWT of its dev identity provider.
func TestDeviceClientNode(t *testing.T) {
	dir := filepath.Join(shortDir(t), "dev")
	e := newEnv(t)
	sock := filepath.Join(dir, "cachet.sock")
	d := e.start(sock, "dev", "--dir", dir, "--backend", config.KindPKCS11)
	var app struct {
		AppID     string `json:"app_id"`
		AppSecret string `json:"app_secret"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "app.json"))
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, b, &app)
	cl := client.New(sock, "http://localhost", app.AppID, app.AppSecret)
	if _, err := cl.Do(context.Background(), client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
		"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "dana"}}}}); err != nil {
		t.Fatal(err)
	}
	jwt := strings.TrimSpace(e.ok("dev", "token", "--dir", dir, "--sub", "dana").stdout)
	runNode(t, "device.test.mjs", 4, d, "CACHET_SOCKET="+sock, "CACHET_BASE_URL=http://localhost",
		"CACHET_APP_ID="+app.AppID, "CACHET_APP_SECRET="+app.AppSecret, "CACHET_USER=dana", "CACHET_JWT="+jwt)
	d.stop()
}
