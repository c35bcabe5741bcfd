//go:build haload

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// TestHALoad runs tools/load (make load-ha) against one SoftHSM appliance on
// SQLite, the same on PostgreSQL, and two appliances (SoftHSM and swtpm) on
// one PostgreSQL database with the load spread over both. HA_SCENARIOS,
// HA_REQUESTS and HA_CONCURRENCY override the defaults.
func TestHALoad(t *testing.T) {
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	bin := filepath.Join(t.TempDir(), "load")
	if out, err := exec.Command("go", "build", "-o", bin, "../../tools/load").CombinedOutput(); err != nil {
		t.Fatalf("build tools/load: %v\n%s", err, out)
	}
	run := func(name string, a *testAppliance, more ...string) {
		app := filepath.Join(a.dir, "app.json")
		b, _ := json.Marshal(client.AppFile{AppID: a.appID, AppSecret: a.appSecret, Socket: a.socket, PublicURL: "http://localhost"})
		writeFile(t, app, string(b), 0o600)
		args := []string{"--app-file", app, "--scenarios", env("HA_SCENARIOS", "plain,policy,create"),
			"--requests", env("HA_REQUESTS", "2000"), "--concurrency", env("HA_CONCURRENCY", "1,8,64"), "--seed", "2000",
			"--json", filepath.Join(env("HA_OUT", t.TempDir()), name+".json")}
		if len(more) > 0 {
			args = append(args, "--also-sockets", strings.Join(more, ","))
		}
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		t.Logf("=== %s\n%s", name, out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	lite := newAppliance(t, config.KindPKCS11)
	lite.init()
	d := lite.serve(lite.cfg)
	run("sqlite-1", lite)
	d.stop()

	c := newHACluster(t)
	da := c.a.serve(c.a.cfg)
	run("postgres-1", c.a)
	db := c.b.serve(c.b.cfg)
	run("postgres-2", c.a, c.b.socket)
	da.stop()
	db.stop()
}
