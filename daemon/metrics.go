package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/metrics"
)

// serveMetrics points the metrics' scrape-time sources at the server's
// health check and the audit head, and serves GET /metrics on the metrics
// socket when the config names one. The socket is apart from the API's: a
// local Prometheus agent in the socket's group scrapes without app
// credentials and without being an allowed peer of the API, and what it
// reads carries no wallet, app or key. stop closes the socket.
func serveMetrics(cfg config.Metrics, mx *metrics.Metrics, srv *Server, log *slog.Logger) (stop func(), err error) {
	mx.SetSources(metrics.Sources{
		Health: func(ctx context.Context) map[string]error {
			h := srv.checkHealth(ctx)
			return map[string]error{"backend": partErr(h.Backend), "store": partErr(h.Store), "audit": partErr(h.Audit)}
		},
		Audit: func(ctx context.Context) (uint64, time.Time, error) {
			head, err := audit.ReadHead(ctx, srv.deps.Store.DB())
			return head.Seq, head.CheckpointTime, err
		},
	})
	if cfg.Socket == "" {
		return func() {}, nil
	}
	ln, cleanup, err := ListenMetrics(cfg)
	if err != nil {
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", mx.Handler())
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "error", err)
		}
	}()
	log.Info("serving metrics", "socket", cfg.Socket)
	return func() {
		hs.Close()
		<-done
		cleanup()
	}, nil
}

func partErr(c componentHealth) error {
	if c.Status == "ok" {
		return nil
	}
	if c.Error == "" {
		return errors.New("failing")
	}
	return errors.New(c.Error)
}
