package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/health"
	"github.com/cachet-custody/cachet/internal/peercred"
	"github.com/cachet-custody/cachet/jwtauth"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/metrics"
	"github.com/cachet-custody/cachet/signer"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// RunOptions is what Run serves with. Run takes ownership of neither the
// backend nor the store; the caller closes them after Run returns.
type RunOptions struct {
	Config  *config.Config
	Backend keys.Backend // the raw hardware backend
	Store   *store.Store
	Logger  *slog.Logger
	Version string
	// Ready, if set, is called once the socket accepts requests (tests).
	Ready func(socket string)
}

// Run serves until ctx ends, then drains in-flight requests and returns. It
// refuses to start when the hardware and the store disagree about the root or
// the audit log's tail does not verify: no signature may leave a daemon whose
// record cannot be trusted.
func Run(ctx context.Context, o RunOptions) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg := o.Config
	mx := metrics.New() // metrics.go: families, wiring and the metrics socket
	// The timed backend goes only to what uses keys (the audit log, the
	// gate): the type assertions below (keys.Anchor, keys.Prober) need the
	// raw backend, which the wrapper would hide.
	timed := mx.Backend(o.Backend)
	o.Store.ObserveCommits(mx.Commit)
	defer o.Store.ObserveCommits(nil)
	if err := ceremony.CheckReady(ctx, o.Backend, o.Store); err != nil {
		return fmt.Errorf("refusing to serve: %w", err)
	}
	info, err := o.Backend.Info(ctx)
	if err != nil {
		return fmt.Errorf("refusing to serve: key backend: %w", err)
	}
	// Every page is read once by PRAGMA quick_check, so a damaged page is
	// found, not served as healthy. It reads the whole file (3.6 s for a
	// million wallets), so by default it runs while the daemon serves:
	// corruption found then is a sticky store failure that closes the
	// release gate at once (store.QuickCheck), and /healthz shows the
	// check's state. Until it ends, pages a request reads are checked by
	// SQLite as they are read, the anchor and the audit tail are verified
	// below, and the probes prove writes. [store] check_before_serving
	// waits for it instead.
	if cfg.Store.CheckBeforeServing {
		if err := o.Store.QuickCheck(ctx); err != nil {
			return fmt.Errorf("refusing to serve: %w", err)
		}
	}
	pub, err := o.Backend.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		return fmt.Errorf("refusing to serve: audit key: %w", err)
	}
	rep, err := audit.VerifyTail(ctx, o.Store.DB(), pub)
	if err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			return fmt.Errorf("refusing to serve: %w (run `cachet audit verify` for the whole log)", err)
		}
		return fmt.Errorf("refusing to serve: %w", err)
	}
	// The audit log signs its checkpoints with the raw backend: a failing
	// record must be able to recover by checkpointing. Everything that
	// releases something gets the gated backend.
	// A database behind the hardware's anchor was rolled back: refuse.
	anchor, _ := o.Backend.(keys.Anchor)
	if anchor != nil {
		if _, _, err := audit.CheckAnchor(ctx, o.Store.DB(), anchor); err != nil {
			return fmt.Errorf("refusing to serve: %w", err)
		}
	}
	alog := audit.New(o.Store, timed, audit.Options{
		CheckpointEvery: cfg.Audit.CheckpointRecords, CheckpointInterval: cfg.Audit.CheckpointInterval.Duration, Logger: log,
		Anchor: anchor,
	})
	mon := health.New(log)
	mon.Live(health.Store, o.Store.Health)
	gated := health.Gate(timed, mon)
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	startWatch(watchCtx, mon, o.Backend, o.Store, alog)
	if err := awaitHealthy(ctx, mon); err != nil {
		return fmt.Errorf("refusing to serve: %w", err)
	}
	nodes := map[string]wallet.Node{}
	for _, ch := range cfg.Chains {
		n, err := wallet.NewNode(ch.RPCURL, wallet.NodeOptions{})
		if err != nil {
			return fmt.Errorf("refusing to serve: chain %s: %w", ch.CAIP2, err)
		}
		nodes[ch.CAIP2] = n
	}
	verifiers := map[string]custody.JWTVerifier{}
	for _, a := range cfg.Apps {
		if a.JWT == nil {
			continue
		}
		v, err := jwtauth.New(a.JWT.Settings(), jwtauth.Options{Logger: log.With("app", a.ID)})
		if err != nil {
			return fmt.Errorf("refusing to serve: app %s: user JWT verification: %w", a.ID, err)
		}
		verifiers[a.ID] = v
	}
	svc := custody.New(o.Store, gated, nil, custody.Options{
		MaxRequestExpiry: cfg.API.MaxRequestExpiry.Duration,
		IdempotencyTTL:   cfg.API.IdempotencyTTL.Duration,
		Chains: func(caip2 string) (wallet.Node, bool) {
			n, ok := nodes[caip2]
			return n, ok
		},
		JWT: func(app string) (custody.JWTVerifier, bool) {
			v, ok := verifiers[app]
			return v, ok
		},
		UserKeyLifetime:   cfg.API.UserKeyLifetime.Duration,
		MaxUserKeys:       cfg.API.MaxUserKeys,
		ImportKeyLifetime: cfg.API.ImportKeyLifetime.Duration,
		Embedded: custody.EmbeddedOptions{
			RecoverPerUser: cfg.Embedded.RecoverLimitPerUser, RecoverPerWallet: cfg.Embedded.RecoverLimitPerWallet,
			AuthSharePerWallet: cfg.Embedded.AuthShareLimitPerWallet, Window: cfg.Embedded.RateWindow.Duration,
			ChallengeLifetime: cfg.Embedded.ChallengeLifetime.Duration,
		},
		Logger:   log,
		Observer: mx,
	})
	ak := authkeys.New(o.Store, gated, authkeys.Options{
		PublicBase: cfg.Server.PublicBase(), MaxRequestExpiry: cfg.API.MaxRequestExpiry.Duration,
		RatePerSecond: cfg.AuthKeys.RatePerSecond, Burst: cfg.AuthKeys.Burst,
	})
	srv := New(Deps{Config: cfg, Backend: audit.Backend(gated, alog), Store: o.Store, Audit: alog, Health: mon, Custody: svc, AuthKeys: ak, Logger: log, Version: o.Version, Metrics: mx})
	stopMetrics, err := serveMetrics(cfg.Metrics, mx, srv, log)
	if err != nil {
		return fmt.Errorf("refusing to serve: %w", err)
	}
	defer stopMetrics()

	ln, activated, cleanup, err := Listen(cfg.Server)
	if err != nil {
		return err
	}
	defer cleanup()
	policy := PeerPolicy{SelfUID: uint32(os.Getuid())}
	for _, u := range cfg.Server.AllowedUIDs {
		policy.UIDs = append(policy.UIDs, uint32(u))
	}
	for _, g := range cfg.Server.AllowedGIDs {
		policy.GIDs = append(policy.GIDs, uint32(g))
	}
	refusals := newPeerRefusals()
	pl := &peerListener{Listener: ln, policy: policy, log: log, refused: refusals, metrics: mx}
	// An own socket was bound in a private directory and renamed into place,
	// so the listener's address is not the path clients use.
	addr := cfg.Server.Socket
	if activated {
		addr = ln.Addr().String()
	}

	detail, _ := json.Marshal(map[string]any{
		"version": o.Version, "pid": os.Getpid(), "backend": info.Kind, "backend_identity": info.Identity,
		"socket": addr, "socket_activated": activated, "audit_tail_from": rep.LastCheckSeq,
	})
	if _, err := alog.Record(ctx, audit.Entry{Actor: "cachet", Action: "daemon.start", Target: info.RootFingerprint, Decision: audit.DecisionAllow, Detail: string(detail)}); err != nil {
		ln.Close()
		return fmt.Errorf("refusing to serve: cannot write the audit log: %w", err)
	}

	signersCtx, stopSigners := context.WithCancel(context.WithoutCancel(ctx))
	signersDone, signerRefusals, err := serveSigners(signersCtx, cfg, svc, ak, alog, log)
	if err != nil {
		stopSigners()
		ln.Close()
		return err
	}

	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go func() { alog.Run(auditCtx); close(auditDone) }()

	hs := srv.HTTPServer()
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(pl) }()

	log.Info("serving", "socket", addr, "socket_activated", activated, "backend", info.Kind,
		"root_fingerprint", info.RootFingerprint, "audit_head", rep.HeadSeq, "public_url", cfg.Server.PublicURL)
	notify(log, "READY=1\nSTATUS=serving on "+addr)
	if o.Ready != nil {
		o.Ready(addr)
	}

	wdCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go srv.watchdog(wdCtx)
	go purge(wdCtx, svc, log)
	if !cfg.Store.CheckBeforeServing {
		go func() {
			start := time.Now()
			err := o.Store.QuickCheck(wdCtx)
			switch {
			case err == nil:
				log.Info("store integrity check passed", "took", time.Since(start).Round(time.Millisecond))
			case wdCtx.Err() == nil:
				log.Error("store integrity check failed: nothing is released", "error", err)
			}
		}()
	}
	go every(wdCtx, time.Minute, func() {
		for _, r := range append([]*peerRefusals{refusals}, signerRefusals...) {
			if err := r.flush(wdCtx, alog); err != nil {
				log.Error("audit of refused peers failed", "error", err)
			}
		}
	})

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: draining in-flight requests", "drain_timeout", cfg.Server.DrainTimeout.String())
	case runErr = <-serveErr:
		log.Error("server stopped", "error", runErr)
	}
	notify(log, "STOPPING=1")
	stopWatchdog()
	// The whole stop is bounded by the drain timeout: draining, then the
	// stop record and the final checkpoint in what is left of it (the
	// record leaves the checkpoint a second). A stop whose record or
	// checkpoint failed returns an error: the process exits non-zero.
	stopBy := time.Now().Add(cfg.Server.DrainTimeout.Duration)
	dctx, cancel := context.WithDeadline(context.Background(), stopBy)
	if err := hs.Shutdown(dctx); err != nil {
		log.Error("drain incomplete; closing the remaining connections", "error", err)
		hs.Close()
	}
	cancel()
	stopSigners()
	signersDone.Wait()
	var stopErrs []error
	recordBy := stopBy.Add(-time.Second)
	if time.Until(recordBy) < time.Second {
		recordBy = time.Now().Add(time.Second)
	}
	rctx, cancel := context.WithDeadline(context.Background(), recordBy)
	for _, r := range append([]*peerRefusals{refusals}, signerRefusals...) {
		if err := r.flush(rctx, alog); err != nil {
			log.Error("audit of refused peers failed", "error", err)
		}
	}
	if _, err := alog.Record(rctx, audit.Entry{Actor: "cachet", Action: "daemon.stop", Target: info.RootFingerprint, Decision: audit.DecisionAllow}); err != nil {
		log.Error("audit record of the stop failed", "error", err)
		stopErrs = append(stopErrs, fmt.Errorf("audit record of the stop: %w", err))
	}
	cancel()
	stopAudit() // appends a final checkpoint
	select {
	case <-auditDone:
		if err := alog.LastCheckpointError(); err != nil {
			stopErrs = append(stopErrs, fmt.Errorf("final audit checkpoint: %w", err))
		}
	case <-time.After(max(time.Until(stopBy), 500*time.Millisecond)):
		stopErrs = append(stopErrs, errors.New("final audit checkpoint did not finish within the drain timeout"))
	}
	stopWatch()
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return errors.Join(append([]error{runErr}, stopErrs...)...)
}

// Health probe schedule. The backend is proved every 200 ms, so a lost TPM
// or HSM stops releases well within a second (a dead swtpm refuses the
// connection at once; a hung one fails the part after probeTimeout). The
// store's probe is a durable write; the record's is a memory read.
const (
	backendProbeEvery = 200 * time.Millisecond
	storeProbeEvery   = 250 * time.Millisecond
	recordProbeEvery  = 250 * time.Millisecond
	probeTimeout      = 500 * time.Millisecond
	storeProbeTimeout = time.Second
	startHealthWait   = 10 * time.Second
)

// startWatch starts the probes of the three parts.
func startWatch(ctx context.Context, mon *health.Monitor, b keys.Backend, st *store.Store, alog *audit.Log) {
	probe := func(ctx context.Context) error {
		if p, ok := b.(keys.Prober); ok {
			return p.Probe(ctx)
		}
		info, err := b.Info(ctx)
		if err == nil && !info.Provisioned {
			err = errNotProvisioned
		}
		return err
	}
	go mon.Watch(ctx, health.Backend, backendProbeEvery, probeTimeout, probe)
	go mon.Watch(ctx, health.Store, storeProbeEvery, storeProbeTimeout, st.Probe)
	go mon.Watch(ctx, health.Record, recordProbeEvery, probeTimeout, func(context.Context) error {
		return alog.LastCheckpointError()
	})
}

// awaitHealthy waits until every part was proved once.
func awaitHealthy(ctx context.Context, mon *health.Monitor) error {
	deadline := time.Now().Add(startHealthWait)
	for {
		err := mon.Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watchdog pings systemd at half the WatchdogSec interval, but only while
// the backend, the store and the audit log pass a health check: a daemon
// whose HSM has gone away should be restarted, not kept alive.
func (s *Server) watchdog(ctx context.Context) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		s.log.Error("watchdog settings", "error", err)
		return
	}
	if interval <= 0 {
		return
	}
	every(ctx, interval/2, func() {
		if err := s.healthErr(); err != nil {
			s.log.Error("health check failed; not pinging the watchdog", "error", err)
			return
		}
		notify(s.log, "WATCHDOG=1")
	})
}

// purge drops expired replay digests and idempotency keys once a minute.
func purge(ctx context.Context, svc *custody.Service, log *slog.Logger) {
	every(ctx, time.Minute, func() {
		if err := svc.Purge(ctx); err != nil && ctx.Err() == nil {
			log.Error("purge of expired replay digests and idempotency keys failed", "error", err)
		}
	})
}

// every calls fn each period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// notify sends a state to systemd. Without NOTIFY_SOCKET it does nothing.
func notify(log *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.Error("sd_notify failed", "state", state, "error", err)
	}
}

// serveSigners opens the socket of every [[signer]] endpoint and serves it
// until ctx ends; the WaitGroup is done once all have drained.
func serveSigners(ctx context.Context, cfg *config.Config, svc *custody.Service, ak *authkeys.Service, alog *audit.Log, log *slog.Logger) (*sync.WaitGroup, []*peerRefusals, error) {
	wg := &sync.WaitGroup{}
	var refused []*peerRefusals
	for _, sc := range cfg.Signers {
		// A key that does not exist or was deleted would refuse every
		// call: say so now rather than at the first signature.
		k, err := ak.Get(ctx, sc.App, sc.AuthorizationKey)
		if err != nil {
			return wg, nil, fmt.Errorf("refusing to serve: signer %s: authorization_key %s of app %s: %w", sc.Name, sc.AuthorizationKey, sc.App, err)
		}
		if k.DeletedAt != nil {
			return wg, nil, fmt.Errorf("refusing to serve: signer %s: authorization_key %s was deleted", sc.Name, sc.AuthorizationKey)
		}
		rpcURL, _ := cfg.RPCURL(sc.CAIP2)
		pr := newPeerRefusals()
		pr.action, pr.prefix = "signer.peer_refused", sc.Name+" "
		refused = append(refused, pr)
		ep, err := signer.New(signer.Options{Config: sc, PublicBase: cfg.Server.PublicBase(), MaxRequestExpiry: cfg.API.MaxRequestExpiry.Duration,
			MaxMessageBytes: cfg.Server.MaxBodyBytes, Timeout: cfg.Server.WriteTimeout.Duration, Custody: svc, AuthKeys: ak, Audit: alog, RPCURL: rpcURL, Logger: log,
			Refused: func(p peercred.Cred) { pr.add(Peer(p)) }})
		if err != nil {
			return wg, nil, fmt.Errorf("refusing to serve: %w", err)
		}
		ln, cleanup, err := listenOwn(config.Server{Socket: sc.Socket, SocketMode: sc.Mode(), SocketGroup: sc.SocketGroup})
		if err != nil {
			return wg, nil, fmt.Errorf("refusing to serve: signer %s: %w", sc.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cleanup()
			if err := ep.Serve(ctx, ln); err != nil {
				log.Error("signer endpoint stopped", "signer", sc.Name, "error", err)
			}
		}()
		log.Info("serving signer endpoint", "signer", sc.Name, "socket", sc.Socket, "app", sc.App, "wallets", len(sc.Wallets))
	}
	return wg, refused, nil
}
