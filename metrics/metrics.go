// Package metrics owns what Cachet tells a Prometheus agent: the metric
// families, their names and labels, and the HTTP handler that serves them on
// a Unix socket of their own (config [metrics]).
//
// The other packages only report events through small hooks (an HTTP
// middleware per route, a key-backend decorator, a store commit observer, a
// custody observer, a refusal counter) and scrape-time sources (health of
// each part, the audit head). Every hook (Route, Backend, Signature,
// PolicyDecision, Refusal, Commit, SetSources) is safe on a nil *Metrics,
// which ignores everything, so code built without metrics needs no checks.
//
// # Labels
//
// No label carries a wallet id, a user, an app, a key, an address or any
// other value a client chooses: routes are the route table's patterns
// ("POST /v1/wallets/{id}/rpc"), methods are the RPC methods Cachet signs
// for, reasons are the API's error codes, operations are the key backend's
// method names and parts are "backend", "store" and "audit". Anything else a
// caller passes is counted as "other", so a bug cannot explode the series.
//
// Names follow Prometheus' conventions: the cachet_ prefix, base units
// (_seconds), _total for counters. The handler is promhttp's, on a registry
// of its own that also carries the Go runtime and process collectors.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "cachet"

// Other is the label value of anything outside a label's known set.
const Other = "other"

// Parts are the parts whose health is exported.
var Parts = []string{"backend", "store", "audit"}

// signMethods are the methods a signature can be released for (wallet
// package's RPC methods and raw_sign).
var signMethods = set("eth_signTransaction", "eth_sendTransaction", "personal_sign", "eth_signTypedData_v4",
	"secp256k1_sign", "eth_sign7702Authorization", "raw_sign")

// refusalReasons are the API's error codes of a refusal (daemon/errors.go,
// Privy's codes; not internal_error, which is a failure) and
// peer_not_allowed for a connection refused by SO_PEERCRED.
var refusalReasons = set("invalid_data", "unauthorized", "forbidden", "policy_violation", "not_found",
	"method_not_allowed", "resource_conflict", "payload_too_large", "too_many_requests", "unavailable",
	"peer_not_allowed")

// backendOps are the keys.Backend methods.
var backendOps = set("seal", "unseal", "auth_key", "sign_auth", "info", "close")

func set(vs ...string) map[string]bool {
	m := map[string]bool{}
	for _, v := range vs {
		m[v] = true
	}
	return m
}

func bounded(known map[string]bool, v string) string {
	if known[v] {
		return v
	}
	return Other
}

// Sources are read at scrape time. Either may be nil.
type Sources struct {
	// Health checks each part (keys of Parts) and returns nil for a
	// healthy one. A part missing from the map is reported failing.
	Health func(ctx context.Context) map[string]error
	// Audit returns the audit log's head sequence number and the time of
	// its last checkpoint (zero if there is none).
	Audit func(ctx context.Context) (headSeq uint64, lastCheckpoint time.Time, err error)
}

// Metrics holds Cachet's metric families and their registry.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	signatures      *prometheus.CounterVec
	decisions       *prometheus.CounterVec
	refusals        *prometheus.CounterVec
	batchSize       prometheus.Histogram
	txDuration      prometheus.Histogram
	commitDuration  prometheus.Histogram
	backendDuration *prometheus.HistogramVec
	backendErrors   *prometheus.CounterVec
	scrapeTimeout   time.Duration

	sources Sources
	now     func() time.Time
}

// New returns the metric families on a fresh registry, with every known
// label combination of the counters present at zero, so that a rate() or an
// alert on a series that has not moved yet sees 0 rather than nothing.
func New() *Metrics {
	lat := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "API requests answered, by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help: "Time from a routed API request's arrival to its response, by route pattern and HTTP status code.", Buckets: lat,
		}, []string{"route", "code"}),
		signatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "signatures_total",
			Help: "Wallet signatures released (committed with their audit record), by RPC method.",
		}, []string{"method"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "policy", Name: "decisions_total",
			Help: "Policy decisions on signing and export requests, by outcome (allow: released; deny: refused and audited).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "refusals_total",
			Help: "Requests and connections refused, by reason (the API's error code, or peer_not_allowed).",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "commit_batch_size",
			Help:    "Write requests carried by each committed store transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		txDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "transaction_duration_seconds",
			Help: "Time of each committed store transaction, from BEGIN to a durable COMMIT.", Buckets: lat,
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "commit_duration_seconds",
			Help: "Time of the COMMIT of each store transaction: SQLite's WAL write and fsync (synchronous=FULL).", Buckets: lat,
		}),
		backendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "backend", Name: "operation_duration_seconds",
			Help: "Time of each key backend (HSM or TPM) operation, by operation.", Buckets: lat,
		}, []string{"op"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "backend", Name: "operation_errors_total",
			Help: "Key backend (HSM or TPM) operations that failed, by operation.",
		}, []string{"op"}),
		scrapeTimeout: 3 * time.Second,
		now:           time.Now,
	}
	m.reg.MustRegister(m.requests, m.requestDuration, m.signatures, m.decisions, m.refusals,
		m.batchSize, m.txDuration, m.commitDuration, m.backendDuration, m.backendErrors,
		scraped{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for v := range signMethods {
		m.signatures.WithLabelValues(v)
	}
	for _, v := range []string{"allow", "deny"} {
		m.decisions.WithLabelValues(v)
	}
	for v := range refusalReasons {
		m.refusals.WithLabelValues(v)
	}
	for v := range backendOps {
		m.backendErrors.WithLabelValues(v)
	}
	return m
}

// SetSources sets what is read at scrape time. Call it before serving.
func (m *Metrics) SetSources(s Sources) {
	if m != nil {
		m.sources = s
	}
}

// Handler serves the metrics in Prometheus' text or protobuf format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the registry the families are on (tests, and embedding).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Route wraps the handler of one route pattern so that its requests are
// counted and timed under that pattern. A nil *Metrics returns h.
func (m *Metrics) Route(pattern string, h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	l := prometheus.Labels{"route": pattern}
	return promhttp.InstrumentHandlerDuration(m.requestDuration.MustCurryWith(l),
		promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(l), h))
}

// Signature counts a signature released for an RPC method.
func (m *Metrics) Signature(method string) {
	if m != nil {
		m.signatures.WithLabelValues(bounded(signMethods, method)).Inc()
	}
}

// PolicyDecision counts a policy decision.
func (m *Metrics) PolicyDecision(allowed bool) {
	if m == nil {
		return
	}
	o := "deny"
	if allowed {
		o = "allow"
	}
	m.decisions.WithLabelValues(o).Inc()
}

// Refusal counts a refusal with its reason (an API error code).
func (m *Metrics) Refusal(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(bounded(refusalReasons, reason)).Inc()
	}
}

// Commit records one committed store transaction: the write requests it
// carried, its time from BEGIN and the time of its COMMIT.
func (m *Metrics) Commit(requests int, transaction, commit time.Duration) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(requests))
	m.txDuration.Observe(transaction.Seconds())
	m.commitDuration.Observe(commit.Seconds())
}

// backendOp records one key backend operation.
func (m *Metrics) backendOp(op string, start time.Time, err error) {
	op = bounded(backendOps, op)
	m.backendDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.backendErrors.WithLabelValues(op).Inc()
	}
}

// scraped is the collector of what is read at scrape time: the health of
// each part and the audit head.
type scraped struct{ m *Metrics }

var (
	healthDesc = prometheus.NewDesc(namespace+"_health",
		"1 while a part (backend, store, audit) is healthy as the daemon's health check reports it when scraped, 0 while it fails.", []string{"part"}, nil)
	auditHeadDesc = prometheus.NewDesc(namespace+"_audit_head_seq",
		"Sequence number of the newest audit record.", nil, nil)
	auditCheckpointAgeDesc = prometheus.NewDesc(namespace+"_audit_seconds_since_checkpoint",
		"Seconds since the newest signed audit checkpoint (absent until the first checkpoint).", nil, nil)
	scrapeErrorDesc = prometheus.NewDesc(namespace+"_metrics_source_up",
		"1 when a scrape-time source (health, audit) answered, 0 when it failed.", []string{"source"}, nil)
)

func (s scraped) Describe(ch chan<- *prometheus.Desc) {
	ch <- healthDesc
	ch <- auditHeadDesc
	ch <- auditCheckpointAgeDesc
	ch <- scrapeErrorDesc
}

func (s scraped) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.scrapeTimeout)
	defer cancel()
	src := s.m.sources
	if src.Health != nil {
		h := src.Health(ctx)
		for _, p := range Parts {
			v := 0.0
			if err, ok := h[p]; ok && err == nil {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, v, p)
		}
	}
	if src.Audit != nil {
		seq, cp, err := src.Audit(ctx)
		up := 1.0
		if err != nil {
			up = 0
		} else {
			ch <- prometheus.MustNewConstMetric(auditHeadDesc, prometheus.GaugeValue, float64(seq))
			if !cp.IsZero() {
				ch <- prometheus.MustNewConstMetric(auditCheckpointAgeDesc, prometheus.GaugeValue, s.m.now().Sub(cp).Seconds())
			}
		}
		ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, up, "audit")
	}
}
