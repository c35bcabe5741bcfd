// Package packaging holds the Debian package's description (nfpm.yaml, built
// by `make deb`), its maintainer scripts, the packaged configuration and
// the package's copyright and changelog. Its test builds the package,
// installs it on this machine with dpkg, checks what it installed, and
// purges it.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// installed are the files the package owns, with their modes after
// postinst.
var installed = []struct {
	path  string
	mode  os.FileMode
	owner string
	group string
}{
	{"/usr/bin/cachet", 0o755, "root", "root"},
	{"/usr/lib/systemd/system/cachet.service", 0o644, "root", "root"},
	{"/usr/lib/systemd/system/cachet.socket", 0o644, "root", "root"},
	{"/usr/lib/systemd/system/cachet-backup.service", 0o644, "root", "root"},
	{"/usr/lib/systemd/system/cachet-backup.timer", 0o644, "root", "root"},
	{"/usr/lib/sysusers.d/cachet.conf", 0o644, "root", "root"},
	{"/usr/lib/tmpfiles.d/cachet.conf", 0o644, "root", "root"},
	{"/usr/share/doc/cachet/copyright", 0o644, "root", "root"},
	{"/usr/share/doc/cachet/changelog.gz", 0o644, "root", "root"},
	{"/usr/share/doc/cachet/cachet.example.toml", 0o644, "root", "root"},
	{"/etc/cachet/cachet.toml", 0o640, "root", "cachet"},
	{"/etc/cachet", 0o750 | os.ModeDir, "root", "cachet"},
	{"/var/lib/cachet", 0o700 | os.ModeDir, "cachet", "cachet"},
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func owner(t *testing.T, fi os.FileInfo) (string, string) {
	t.Helper()
	st := fi.Sys().(*syscall.Stat_t)
	u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10))
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username, g.Name
}

// `make deb` builds the package; dpkg installs it on this machine (the
// suite runs as root, as CI does): its files, the cachet user and groups,
// the conffile (kept across a reinstall once edited), a config that passes
// `cachet config check`, units that pass `systemd-analyze verify`, and no
// daemon started or enabled. Purged, it leaves nothing but what Debian
// policy keeps: the system user and its groups.
func TestDebInstallPurge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("installing a package needs root; the suite runs as root (README, About the tests)")
	}
	// Never touch a real appliance's state.
	if _, err := os.Stat("/var/lib/cachet/cachet.db"); err == nil {
		t.Fatal("/var/lib/cachet/cachet.db exists: this machine holds a Cachet store; not installing over it")
	}
	exec.Command("dpkg", "--purge", "cachet").Run() // a previous run's leftovers

	deb := filepath.Join(t.TempDir(), "cachet.deb")
	make := exec.Command("make", "-s", "deb", "DEB_OUT="+deb)
	make.Dir = ".."
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "cachet").Run() })

	out := run(t, "dpkg", "-i", deb)
	if !strings.Contains(out, "installed but not started") {
		t.Errorf("postinst did not say the appliance is not started:\n%s", out)
	}
	for _, f := range installed {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("after install: %v", err)
			continue
		}
		if fi.Mode()&(os.ModePerm|os.ModeDir) != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
		if o, g := owner(t, fi); o != f.owner || g != f.group {
			t.Errorf("%s: owner %s:%s, want %s:%s", f.path, o, g, f.owner, f.group)
		}
	}
	u, err := user.Lookup("cachet")
	if err != nil {
		t.Fatalf("the cachet user: %v", err)
	}
	if u.HomeDir != "/var/lib/cachet" {
		t.Errorf("cachet's home is %s", u.HomeDir)
	}
	pw := run(t, "getent", "passwd", "cachet")
	if !strings.HasSuffix(strings.TrimSpace(pw), "nologin") {
		t.Errorf("cachet can log in: %s", pw)
	}
	groups := run(t, "id", "-Gn", "cachet")
	for _, g := range []string{"cachet", "cachet-metrics", "tss", "softhsm"} {
		if !strings.Contains(" "+strings.TrimSpace(groups)+" ", " "+g+" ") {
			t.Errorf("cachet is not in group %s: %s", g, groups)
		}
	}
	if cf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "cachet"); !strings.Contains(cf, "/etc/cachet/cachet.toml") {
		t.Errorf("/etc/cachet/cachet.toml is not a conffile: %q", cf)
	}
	if out := run(t, "/usr/bin/cachet", "config", "check", "/etc/cachet/cachet.toml"); !strings.Contains(out, "ok") {
		t.Errorf("config check: %s", out)
	}
	verify := exec.Command("systemd-analyze", "verify", "--man=no",
		"/usr/lib/systemd/system/cachet.service", "/usr/lib/systemd/system/cachet.socket",
		"/usr/lib/systemd/system/cachet-backup.service", "/usr/lib/systemd/system/cachet-backup.timer")
	vout, err := verify.CombinedOutput()
	var problems []string
	for _, l := range strings.Split(string(vout), "\n") {
		// Without a running manager, systemd-analyze cannot resolve
		// users; that is the only tolerated noise (systemd/units_test.go).
		if l == "" || strings.Contains(l, "Failed to resolve") || strings.Contains(l, "System has not been booted with systemd") {
			continue
		}
		problems = append(problems, l)
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify on the installed units: %v\n%s", err, strings.Join(problems, "\n"))
	}
	// Never started, never enabled: an uninitialised appliance must not run.
	wants, _ := filepath.Glob("/etc/systemd/system/*.wants/cachet*")
	if len(wants) > 0 {
		t.Errorf("the package enabled units: %v", wants)
	}
	// The package's binary only: a developer's `cachet dev` from elsewhere
	// is not the package's doing.
	if out, _ := exec.Command("pgrep", "-f", "^/usr/bin/cachet( |$)").Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("a cachet process runs after install: pids %s", out)
	}

	// An edited conffile survives a reinstall.
	edited := append(mustRead(t, "/etc/cachet/cachet.toml"), []byte("\n# edited by the operator\n")...)
	if err := os.WriteFile("/etc/cachet/cachet.toml", edited, 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "--force-confold", "-i", deb)
	if got := mustRead(t, "/etc/cachet/cachet.toml"); !bytes.Equal(got, edited) {
		t.Error("reinstalling replaced the operator's /etc/cachet/cachet.toml")
	}

	run(t, "dpkg", "--purge", "cachet")
	if err := exec.Command("dpkg-query", "-W", "-f=${Status}", "cachet").Run(); err == nil {
		if st, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "cachet").Output(); !strings.Contains(string(st), "not-installed") {
			t.Errorf("after purge dpkg still knows cachet: %s", st)
		}
	}
	for _, f := range installed {
		if _, err := os.Lstat(f.path); !os.IsNotExist(err) {
			t.Errorf("after purge %s is still there (%v)", f.path, err)
		}
	}
	for _, p := range []string{"/run/cachet-metrics", "/usr/share/doc/cachet"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("after purge %s is still there", p)
		}
	}
	// What Debian policy keeps: the system user and its groups.
	if _, err := user.Lookup("cachet"); err != nil {
		t.Errorf("purge removed the cachet system user, which Debian policy keeps: %v", err)
	}
	t.Logf("after purge, kept as Debian policy recommends: %s", strings.TrimSpace(run(t, "id", "cachet")))
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
