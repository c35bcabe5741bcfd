package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cachet-custody/cachet/internal/peercred"
)

// Where a level's CPU went: the appliances' processes, this process (the
// clients), and the machine as a whole. Throughput on a shared VM moves by
// a quarter from run to run with the hypervisor's steal; CPU time per
// request moves much less, and says how far a request is from the bound,
// whose unit is CPU time too.

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (the kernel's ABI to user
// space), and the standard library has no sysconf(_SC_CLK_TCK) to ask.
const clockTicks = 100

// cpuSample is the CPU time used so far by the appliances and by this
// process, and the machine's counters from /proc/stat.
type cpuSample struct {
	appliances, self time.Duration
	machine          machineTicks
	ok               bool // every appliance's counters were read
}

type machineTicks struct{ total, idle, steal uint64 }

// appliancePIDs asks the kernel which process serves each socket
// (SO_PEERCRED of a connection to it).
func appliancePIDs(sockets []string) ([]int, error) {
	var pids []int
	for _, s := range sockets {
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(context.Background(), "unix", s)
		if err != nil {
			return nil, err
		}
		cred, err := peercred.Read(c.(*net.UnixConn))
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("peer of %s: %w", s, err)
		}
		pids = append(pids, int(cred.PID))
	}
	return pids, nil
}

func sampleCPU(pids []int) cpuSample {
	s := cpuSample{ok: len(pids) > 0}
	for _, pid := range pids {
		d, err := processCPU(pid)
		if err != nil {
			s.ok = false
			continue
		}
		s.appliances += d
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.machine, _ = readMachineTicks()
	return s
}

// processCPU is utime+stime of every thread of pid (/proc/PID/stat).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after it start at field 3, so utime (14) and stime (15)
	// are its 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// readMachineTicks reads the first line of /proc/stat: user nice system
// idle iowait irq softirq steal (guest time is already counted in user).
func readMachineTicks() (machineTicks, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return machineTicks{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return machineTicks{}, fmt.Errorf("/proc/stat: empty")
	}
	fs := strings.Fields(sc.Text())
	if len(fs) < 9 || fs[0] != "cpu" {
		return machineTicks{}, fmt.Errorf("/proc/stat: unexpected first line")
	}
	var v [8]uint64
	var m machineTicks
	for i := range v {
		n, err := strconv.ParseUint(fs[i+1], 10, 64)
		if err != nil {
			return machineTicks{}, fmt.Errorf("/proc/stat: %w", err)
		}
		v[i] = n
		m.total += n
	}
	m.idle, m.steal = v[3]+v[4], v[7]
	return m, nil
}

// cpuUse is what happened between two samples, for n requests.
type cpuUse struct {
	ApplianceUSPerReq float64 `json:"appliance_cpu_us_per_request,omitempty"`
	ClientUSPerReq    float64 `json:"client_cpu_us_per_request"`
	IdlePct           float64 `json:"machine_idle_pct"`
	StealPct          float64 `json:"machine_steal_pct"`
}

func cpuBetween(a, b cpuSample, n int) cpuUse {
	var u cpuUse
	if a.ok && b.ok {
		u.ApplianceUSPerReq = float64((b.appliances - a.appliances).Microseconds()) / float64(n)
	}
	u.ClientUSPerReq = float64((b.self - a.self).Microseconds()) / float64(n)
	if t := b.machine.total - a.machine.total; t > 0 {
		u.IdlePct = 100 * float64(b.machine.idle-a.machine.idle) / float64(t)
		u.StealPct = 100 * float64(b.machine.steal-a.machine.steal) / float64(t)
	}
	return u
}

func (u cpuUse) appliance() string {
	if u.ApplianceUSPerReq == 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f µs", u.ApplianceUSPerReq)
}
