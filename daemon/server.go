// Package daemon owns Cachet's HTTP API on a Unix socket: the listener
// (systemd socket activation or a socket of its own), the peer-credential
// check that runs before a byte of a request is read, app credentials, the
// route table with the permission each route needs, the error shape, and the
// lifecycle (sd_notify READY/STOPPING, watchdog, draining on SIGTERM).
//
// It speaks HTTP/1.1 only, to local processes only. It never puts a request
// body, a header value or a secret into its log.
package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/health"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/metrics"
	"github.com/cachet-custody/cachet/store"
)

// Log field names, kept in one place so logs can be queried reliably.
const (
	logMethod   = "method"
	logPath     = "path"
	logStatus   = "status"
	logDuration = "duration_ms"
	logUID      = "uid"
	logApp      = "app_id"
)

// Access is the permission a route requires.
type Access int

const (
	// AccessPeer: an allowed local peer (every connection already is).
	AccessPeer Access = iota
	// AccessApp: HTTP Basic app credentials and a matching privy-app-id.
	AccessApp
	// AccessAdmin: AccessApp, from a peer the config names as an
	// administrator (server.admin_uids, server.admin_gids) or the daemon's
	// own uid.
	AccessAdmin
)

// App is the authenticated app of a request.
type App struct{ ID string }

type appKey struct{}

// AppFrom returns the request's authenticated app; ok is false on routes
// that do not require one.
func AppFrom(ctx context.Context) (App, bool) {
	a, ok := ctx.Value(appKey{}).(App)
	return a, ok
}

// HandlerFunc is an API handler: it writes a success itself, or returns an
// error that the server maps to the error shape.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Deps is what the server works with.
type Deps struct {
	Config  *config.Config
	Backend keys.Backend // already wrapped by audit.Backend
	Store   *store.Store
	Audit   *audit.Log
	// Health gates every release (see package health); nil gates nothing
	// (tests of the HTTP layer alone).
	Health *health.Monitor
	// Custody serves the wallet API; nil serves only health and status.
	Custody *custody.Service
	// AuthKeys serves the appliance's authorization keys; nil leaves them
	// out.
	AuthKeys *authkeys.Service
	Logger   *slog.Logger
	Version  string
	// Metrics counts requests by route and refusals by reason; nil counts
	// nothing.
	Metrics *metrics.Metrics
}

// Server is the API.
type Server struct {
	deps   Deps
	log    *slog.Logger
	mux    *http.ServeMux
	apps   map[string]config.App
	host   string
	routes map[string]Access
	kind   string // the backend kind, for /healthz
}

// New builds the API handler and its routes.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	s := &Server{
		deps: d, log: d.Logger, mux: http.NewServeMux(),
		apps: map[string]config.App{}, host: d.Config.Server.PublicHost(),
		routes: map[string]Access{}, kind: d.Config.Backend.Kind,
	}
	for _, a := range d.Config.Apps {
		s.apps[a.ID] = a
	}
	s.Handle("GET /healthz", AccessPeer, s.healthz)
	s.Handle("GET /v1/status", AccessApp, s.status)
	if d.Custody != nil {
		s.routeWalletAPI()
		s.routePolicyAPI()
	}
	if d.AuthKeys != nil {
		s.routeAuthKeys()
	}
	return s
}

// Handle registers a route with the access it requires. It panics on a
// duplicate pattern at start-up, so two handlers can never silently share a
// route.
func (s *Server) Handle(pattern string, access Access, h HandlerFunc) {
	if _, dup := s.routes[pattern]; dup {
		panic("daemon: route registered twice: " + pattern)
	}
	s.routes[pattern] = access
	s.mux.Handle(pattern, s.deps.Metrics.Route(pattern, s.wrap(access, h)))
}

func (s *Server) wrap(access Access, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if access == AccessAdmin && !s.isAdmin(r) {
			s.writeError(w, r, forbidden("Only administrators (server.admin_uids, server.admin_gids) may manage authorization keys."))
			return
		}
		if access == AccessApp || access == AccessAdmin {
			app, err := s.authenticateApp(r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), appKey{}, app))
			w.Header().Set("privy-app-id", app.ID)
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.deps.Config.Server.MaxBodyBytes)
		// The release gate: a request that may release something (every
		// method but GET) is refused while a part is failing, and its
		// success is withheld if a part failed while it ran.
		if r.Method != http.MethodGet {
			if err := s.healthErr(); err != nil {
				s.writeError(w, r, err)
				return
			}
			w = &gatedWriter{ResponseWriter: w, s: s, r: r}
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// gatedWriter checks the release gate when a success is about to be
// written: if a part failed since the request was admitted, the client gets
// 503 naming the part instead, and the withholding is recorded. The
// handler's body is then dropped.
type gatedWriter struct {
	http.ResponseWriter
	s        *Server
	r        *http.Request
	decided  bool
	withheld bool
}

func (g *gatedWriter) WriteHeader(code int) {
	if g.decided {
		return
	}
	g.decided = true
	if code < 400 {
		if err := g.s.healthErr(); err != nil {
			g.withheld = true
			g.s.withhold(g.ResponseWriter, g.r, err)
			return
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gatedWriter) Write(b []byte) (int, error) {
	if !g.decided {
		g.WriteHeader(http.StatusOK)
	}
	if g.withheld {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

// isAdmin reports whether the peer is the daemon's own uid or an
// administrator the config names.
func (s *Server) isAdmin(r *http.Request) bool {
	p, err := PeerFrom(r.Context())
	if err != nil {
		return false
	}
	pol := PeerPolicy{SelfUID: uint32(os.Getuid())}
	for _, u := range s.deps.Config.Server.AdminUIDs {
		pol.UIDs = append(pol.UIDs, uint32(u))
	}
	for _, g := range s.deps.Config.Server.AdminGIDs {
		pol.GIDs = append(pol.GIDs, uint32(g))
	}
	return pol.Allows(p)
}

// authenticateApp checks Basic app_id:app_secret against the configured
// hash and that privy-app-id names the same app. Every failure gives the same
// message, so a caller cannot probe which app ids exist.
func (s *Server) authenticateApp(r *http.Request) (App, error) {
	fail := unauthorized("Invalid app ID or app secret.")
	// The app is named once: with two lines, which one counts would be the
	// choice of each reader (Go's takes the first; a proxy or a log in
	// front may take the last).
	for _, h := range []string{"Authorization", "privy-app-id"} {
		if n := len(r.Header.Values(h)); n > 1 {
			return App{}, badRequest(fmt.Sprintf("The %s header is given %d times; send it once.", h, n))
		}
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		return App{}, unauthorized("Missing app credentials: send HTTP Basic app_id:app_secret.")
	}
	hdr := r.Header.Get("privy-app-id")
	if hdr == "" {
		return App{}, badRequest("Missing privy-app-id header.")
	}
	app, known := s.apps[id]
	if !known {
		// Hash anyway so an unknown id costs the same as a wrong secret.
		config.App{SecretHash: config.HashAppSecret("")}.CheckSecret(secret)
		return App{}, fail
	}
	if !app.CheckSecret(secret) {
		return App{}, fail
	}
	if subtle.ConstantTimeCompare([]byte(hdr), []byte(id)) != 1 {
		return App{}, badRequest("privy-app-id does not match the app credentials.")
	}
	return App{ID: id}, nil
}

// ServeHTTP applies the checks every request gets, then routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panicked", logMethod, r.Method, logPath, r.URL.Path, "panic", fmt.Sprint(p))
			if !rec.wrote {
				s.writeError(rec, r, fmt.Errorf("panic: %v", p))
			}
		}
		attrs := []any{logMethod, r.Method, logPath, r.URL.Path, logStatus, rec.status, logDuration, time.Since(start).Milliseconds()}
		if p, err := PeerFrom(r.Context()); err == nil {
			attrs = append(attrs, logUID, p.UID)
		}
		if id, _, ok := r.BasicAuth(); ok && rec.status < 400 {
			attrs = append(attrs, logApp, id)
		}
		s.log.Info("request", attrs...)
	}()
	// A chunked request may have carried a Content-Length too, which Go
	// drops before the handler sees it; a proxy in front that framed it by
	// that length would take the bytes after the chunks for the body, and Go
	// would serve them as the next request (request smuggling). RFC 9112
	// §6.1 says to close the connection after answering such a request; as
	// it cannot be told apart here, every chunked request closes it.
	if len(r.TransferEncoding) > 0 {
		rec.Header().Set("Connection", "close")
	}
	// A browser must never drive this API: a page could otherwise reach a
	// socket that a local proxy exposes.
	if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
		s.writeError(rec, r, forbidden("Browser requests are not accepted."))
		return
	}
	if !strings.EqualFold(r.Host, s.host) {
		s.writeError(rec, r, badRequest(fmt.Sprintf("Unexpected Host %q: this daemon serves %q (server.public_url).", r.Host, s.host)))
		return
	}
	// Go's mux answers a path with an empty, "." or ".." segment with a
	// redirect of its own (307, an HTML body), before any credential is
	// checked or the refusal recorded, and a client that follows it sends
	// its request, signed for one path, to another. Such a path is refused
	// here, in the API's shape.
	if p := r.URL.EscapedPath(); !canonicalPath(p) {
		s.writeError(rec, r, badRequest(fmt.Sprintf("The path %q is not in canonical form: no empty, \".\" or \"..\" segments.", p)))
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.writeError(rec, r, s.noRoute(r))
		return
	}
	s.mux.ServeHTTP(rec, r)
}

// canonicalPath reports whether p is already in the form Go's mux would
// clean it to (path.Clean, keeping a trailing slash): the mux redirects
// anything else.
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// noRoute tells "no such path" from "path exists, other method".
func (s *Server) noRoute(r *http.Request) error {
	for pattern := range s.routes {
		_, path, _ := strings.Cut(pattern, " ")
		probe := r.Clone(r.Context())
		probe.Method, _, _ = strings.Cut(pattern, " ")
		if _, p := s.mux.Handler(probe); p == pattern && path != "" {
			return &APIError{Status: http.StatusMethodNotAllowed, Code: CodeMethod, Message: fmt.Sprintf("%s is not allowed on %s.", r.Method, r.URL.Path)}
		}
	}
	return &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("No route for %s %s.", r.Method, r.URL.Path)}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// HTTPServer builds the http.Server for the handler, with the configured
// timeouts and the peer carried from the listener into each request.
func (s *Server) HTTPServer() *http.Server {
	c := s.deps.Config.Server
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: c.ReadHeaderTimeout.Duration,
		ReadTimeout:       c.ReadTimeout.Duration,
		WriteTimeout:      c.WriteTimeout.Duration,
		IdleTimeout:       c.IdleTimeout.Duration,
		MaxHeaderBytes:    64 << 10,
		// "OPTIONS *" goes to the handler, which refuses it in the API's
		// shape, instead of Go's own empty 200.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				ctx = context.WithValue(ctx, peerKey{}, pc.peer)
				ctx = audit.WithActor(ctx, pc.peer.String())
			}
			return ctx
		},
	}
}

// basicAuthHeader builds an Authorization header value (tests and clients).
func basicAuthHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}
