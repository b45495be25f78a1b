// Package console is the fleet's web operator console: server-rendered
// pages (html/template) over the Redis ledger and, when configured, Kafka —
// overview, jobs, one job's timeline and result, leases and workers, vendor
// budgets, dead letters — with live updates over Server-Sent Events.
//
// Safe by default: read-only unless Config.Write; every mutating request
// (release, abort, dead-letter replay) is a POST checked on the server, protected by
// http.CrossOriginProtection, confirmed on a page of its own, and written to
// the audit stream {ns}:audit. Every response carries a strict CSP (no inline
// script or style; the one script and style sheet are embedded). Requests
// authenticate with a bearer token (Config.TokenFile; browsers log in once
// and keep an HttpOnly SameSite=Strict cookie) or a trusted reverse-proxy
// header (Config.ProxyHeader, e.g. oauth2-proxy's X-Auth-Request-User);
// with neither, only loopback clients are served.
//
// Redis cost: the fleet-wide figures are read at most once per
// Config.Interval whatever the number of browsers (one shared snapshot,
// computed by one caller at a time), and one job's page at most once per
// interval per job.
//
// A Server is safe for concurrent use.
package console

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/state"
)

// Defaults.
const (
	// DefaultInterval is how often the console reads the fleet-wide figures
	// (at most) and pushes live updates.
	DefaultInterval = 2 * time.Second
	// DefaultMaxStreams bounds the live-update streams served at once.
	DefaultMaxStreams = 64
	// AuditMaxLen is the audit stream's approximate length cap.
	AuditMaxLen = 10000
)

// Config configures a Server. Store is required; the zero value of every
// other field is its default.
type Config struct {
	// Store is the fleet's ledger.
	Store *state.Store
	// Kafka, if set, is what the console shows of Kafka: lag and dead
	// letters. Nil: the pages say "Kafka: not configured".
	Kafka Kafka
	// Write allows the mutating actions (release, abort, dead-letter
	// replay). Default: read-only.
	Write bool
	// TokenFile holds the bearer token (surrounding white space trimmed).
	TokenFile string
	// ProxyHeader names the header a trusted reverse proxy sets to the
	// authenticated user (X-Forwarded-User, X-Auth-Request-User). Only set
	// it when every request comes through that proxy.
	ProxyHeader string
	// Redact masks the fleet's secrets in everything rendered; nil masks
	// nothing beyond the console's own rules (URL query strings, which
	// carry pre-signed signatures, are always cut).
	Redact *redact.Set
	// Logger receives the console's logs; nil: none.
	Logger *zap.Logger
	// Now is the clock (for countdowns between Redis reads); nil: time.Now.
	Now func() time.Time
	// Interval is how often the fleet-wide figures are read at most
	// (DefaultInterval).
	Interval time.Duration
	// MaxStreams bounds concurrent live-update streams (DefaultMaxStreams).
	MaxStreams int
}

// Server serves the console.
type Server struct {
	cfg     Config
	st      *state.Store
	log     *zap.Logger
	now     func() time.Time
	token   []byte // nil: no token auth
	session string // the cookie value a logged-in browser holds
	pages   map[string]*template.Template
	static  fs.FS
	handler http.Handler

	sf      singleflight.Group
	mu      sync.Mutex
	cache   map[string]cached
	streams chan struct{}
	reads   atomic.Int64 // snapshots computed (tests check the sharing)

	failures []time.Time // failed logins of the last minute (under mu)

	jobsMu sync.Mutex
	jobs   *jobScan // the last job listing
}

type cached struct {
	at  time.Time
	val any
	err error
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("console: Config.Store is required")
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.MaxStreams = cmp.Or(cfg.MaxStreams, DefaultMaxStreams)
	if cfg.Interval < 0 || cfg.MaxStreams < 0 {
		return nil, errors.New("console: Config.Interval and Config.MaxStreams must not be negative")
	}
	if cfg.ProxyHeader != "" && http.CanonicalHeaderKey(cfg.ProxyHeader) == "Authorization" {
		return nil, errors.New("console: Config.ProxyHeader may not be Authorization")
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, now: cfg.Now, cache: map[string]cached{},
		streams: make(chan struct{}, cfg.MaxStreams)}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("console")
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("console: Config.TokenFile: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return nil, fmt.Errorf("console: Config.TokenFile %s: the token must be at least 16 characters", cfg.TokenFile)
		}
		s.token = []byte(tok)
		m := hmac.New(sha256.New, s.token)
		m.Write([]byte("analysisfleet console session"))
		s.session = hex.EncodeToString(m.Sum(nil))
	}
	pages, err := s.parsePages()
	if err != nil {
		return nil, err
	}
	s.pages = pages
	s.static, _ = fs.Sub(staticFS, "static")
	s.handler = s.routes()
	return s, nil
}

// Handler returns the console's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// ReadOnly reports whether the console refuses mutating actions.
func (s *Server) ReadOnly() bool { return !s.cfg.Write }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(s.static)))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	for path, v := range s.views() {
		mux.HandleFunc("GET "+path, s.page(v))
	}
	mux.HandleFunc("GET /live", s.live)
	mux.HandleFunc("GET /dlq/replay", s.replayConfirm)
	mux.HandleFunc("POST /dlq/replay", s.replay)
	mux.HandleFunc("GET /jobs/{id}/{action}", s.confirm)
	mux.HandleFunc("POST /jobs/{id}/{action}", s.act)

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusForbidden, "cross-origin request refused: mutating requests must come from the console's own pages")
	}))
	return s.secure(cop.Handler(s.authenticate(mux)))
}

// csp is the Content-Security-Policy of every response.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the security headers of every response.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// remember returns the cached value of key if younger than the interval,
// else computes it once however many callers ask at the same time.
func (s *Server) remember(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && s.now().Sub(c.at) < s.cfg.Interval {
		return c.val, c.err
	}
	v, err, _ := s.sf.Do(key, func() (any, error) {
		// A caller that missed the cache just before another computation
		// stored it must not compute again.
		s.mu.Lock()
		c, ok := s.cache[key]
		s.mu.Unlock()
		if ok && s.now().Sub(c.at) < s.cfg.Interval {
			return c.val, c.err
		}
		// The computation outlives a caller that gives up: the others wait on it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		v, err := fn(ctx)
		s.mu.Lock()
		if len(s.cache) > 1000 { // per-job entries: drop them all now and then
			clear(s.cache)
		}
		s.cache[key] = cached{at: s.now(), val: v, err: err}
		s.mu.Unlock()
		return v, err
	})
	return v, err
}

// Serve serves the console on ln until ctx ends, then shuts down: the live
// streams end at once, other requests get up to five seconds. It returns
// nil after a shutdown asked for by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	base, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
	}
	stop() // ends the live streams, so Shutdown does not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-done
	if err != nil {
		return fmt.Errorf("console: shutdown: %w", err)
	}
	return nil
}
