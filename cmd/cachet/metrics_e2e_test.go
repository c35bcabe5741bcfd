package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// scrape reads the metrics socket as a Prometheus agent does, and returns
// the families by name.
func scrape(t *testing.T, socket string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}
	resp, err := c.Get("http://localhost/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape: parse: %v\n%s", err, body)
	}
	return fams
}

// value is the value of the series of family name whose labels include
// labels (name=value pairs): a counter's or gauge's value, a histogram's
// sample count. ok is false when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// A Prometheus agent scrapes the metrics socket, without app credentials,
// while clients sign: every named family moves as the load says it must, a
// policy denial moves the denial counters, no label carries a wallet id or
// address, and a TPM that goes away flips the backend's health gauge.
func TestMetricsDuringSigningLoad(t *testing.T) {
	a := newAppliance(t, config.KindTPM)
	metricsSock := filepath.Join(a.dir, "metrics.sock")
	a.cfg = a.writeConfigWith("cachet.toml", a.backendSection(""), "",
		fmt.Sprintf("[metrics]\nsocket = %q\nsocket_mode = \"0600\"\n", metricsSock))
	a.init()
	a.serve(a.cfg)
	ctx := context.Background()
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	do := func(method, path string, body any) (map[string]any, error) {
		var out map[string]any
		resp, err := cl.Do(ctx, client.Request{Method: method, Path: path, Body: body})
		if err == nil {
			mustJSON(t, resp.Body, &out)
		}
		return out, err
	}
	pol, err := do("POST", "/v1/policies", map[string]any{
		"version": "1.0", "name": "messages only", "chain_type": "ethereum",
		"rules": []any{map[string]any{"name": "messages", "method": "personal_sign", "action": "ALLOW", "conditions": []any{}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	w, err := do("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "policy_ids": []string{pol["id"].(string)}})
	if err != nil {
		t.Fatal(err)
	}
	wid, addr := w["id"].(string), w["address"].(string)
	rpc := "/v1/wallets/" + wid + "/rpc"
	const route = "POST /v1/wallets/{id}/rpc"

	before := scrape(t, metricsSock)
	for _, p := range []string{"backend", "store", "audit"} {
		if v, ok := value(before, "cachet_health", "part", p); !ok || v != 1 {
			t.Fatalf("cachet_health{part=%q} = %v (present %v), want 1", p, v, ok)
		}
	}

	// The load: 4 clients, 15 signatures each, scraped all along.
	const clients, each = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := do("POST", rpc, map[string]any{"method": "personal_sign", "params": map[string]any{"message": fmt.Sprintf("m%d", i), "encoding": "utf-8"}})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()
	scrapes := 0
	for done := false; !done; {
		select {
		case <-loadDone:
			done = true
		default:
			scrape(t, metricsSock)
			scrapes++
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("signing under load: %v", err)
	}
	t.Logf("%d scrapes during the load", scrapes)

	// A denial: the policy allows only messages.
	_, err = do("POST", rpc, txBody(1, recipient, "0x", "0x1"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "policy_violation" {
		t.Fatalf("transaction under a messages-only policy: %v, want policy_violation", err)
	}
	const n = clients * each
	moved := []struct {
		name   string
		labels []string
		min    float64 // least increase
		max    float64 // greatest increase (0: no bound)
	}{
		{"cachet_http_requests_total", []string{"route", route, "code", "200"}, n, n},
		{"cachet_http_requests_total", []string{"route", route, "code", "403"}, 1, 1},
		{"cachet_http_request_duration_seconds", []string{"route", route, "code", "200"}, n, n},
		{"cachet_signatures_total", []string{"method", "personal_sign"}, n, n},
		{"cachet_signatures_total", []string{"method", "eth_signTransaction"}, 0, 0},
		{"cachet_policy_decisions_total", []string{"outcome", "allow"}, n, n},
		{"cachet_policy_decisions_total", []string{"outcome", "deny"}, 1, 1},
		{"cachet_refusals_total", []string{"reason", "policy_violation"}, 1, 1},
		{"cachet_refusals_total", []string{"reason", "unauthorized"}, 0, 0},
		{"cachet_store_commit_batch_size", nil, 1, 0},
		{"cachet_store_transaction_duration_seconds", nil, 1, 0},
		{"cachet_store_commit_duration_seconds", nil, 1, 0},
		{"cachet_backend_operation_duration_seconds", []string{"op", "unseal"}, n, 0},
		{"cachet_audit_head_seq", nil, n + 1, 0},
	}
	check := func(after map[string]*dto.MetricFamily) (problems []string) {
		for _, m := range moved {
			b, _ := value(before, m.name, m.labels...)
			v, ok := value(after, m.name, m.labels...)
			if !ok {
				problems = append(problems, fmt.Sprintf("%s%v: no series", m.name, m.labels))
				continue
			}
			if d := v - b; d < m.min || (m.max > 0 && d > m.max) || (m.max == 0 && m.min == 0 && d != 0) {
				problems = append(problems, fmt.Sprintf("%s%v moved by %v, want %v..%v", m.name, m.labels, d, m.min, m.max))
			}
		}
		return problems
	}
	// promhttp counts a request once its handler has returned, which may be
	// just after the client has its answer: scrape until the counts settle.
	var after map[string]*dto.MetricFamily
	var problems []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after = scrape(t, metricsSock)
		if problems = check(after); len(problems) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
	// The group commit carried every signature's write: the batch sizes'
	// sum grew by at least the number of signatures.
	sum := func(f map[string]*dto.MetricFamily) float64 {
		return f["cachet_store_commit_batch_size"].GetMetric()[0].GetHistogram().GetSampleSum()
	}
	if d := sum(after) - sum(before); d < n {
		t.Errorf("store batch sizes grew by %v, want at least %d", d, n)
	}
	// The config asks for a checkpoint every second once records were
	// added; the gauge appears with the first and stays small.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		v, ok := value(scrape(t, metricsSock), "cachet_audit_seconds_since_checkpoint")
		if ok && v >= 0 && v < 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cachet_audit_seconds_since_checkpoint = %v (present %v) 15s after the load", v, ok)
		}
	}
	// No label value names a wallet, an address or an app.
	for name, f := range after {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, secret := range []string{wid, strings.ToLower(addr), addr, a.appID} {
					if strings.Contains(l.GetValue(), secret) {
						t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	}

	// A backend fault: the TPM goes away. The health gauge flips, and the
	// refused signature shows in the backend's error counter or the
	// unavailable refusals, whichever part noticed first.
	a.sw.Stop(t)
	var faulty map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		faulty = scrape(t, metricsSock)
		if v, ok := value(faulty, "cachet_health", "part", "backend"); ok && v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cachet_health{part=\"backend\"} is still 1 10s after the TPM went away")
		}
	}
	if v, _ := value(faulty, "cachet_health", "part", "store"); v != 1 {
		t.Errorf("cachet_health{part=\"store\"} = %v with only the TPM gone, want 1", v)
	}
	// A signature is refused while the backend fails, and counted so.
	_, err = do("POST", rpc, map[string]any{"method": "personal_sign", "params": map[string]any{"message": "no TPM", "encoding": "utf-8"}})
	if !errors.As(err, &ce) || ce.Code != "unavailable" {
		t.Fatalf("signing with the TPM gone: %v, want unavailable", err)
	}
	refused := scrape(t, metricsSock)
	for _, m := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"cachet_refusals_total", []string{"reason", "unavailable"}, 1},
		{"cachet_signatures_total", []string{"method", "personal_sign"}, 0},
	} {
		b, _ := value(faulty, m.name, m.labels...)
		v, _ := value(refused, m.name, m.labels...)
		if v-b != m.delta {
			t.Errorf("%s%v moved by %v with the TPM gone, want %v", m.name, m.labels, v-b, m.delta)
		}
	}
}
