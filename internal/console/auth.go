package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"go.uber.org/zap"
)

// sessionCookie holds a logged-in browser's session: a keyed digest of the
// token, never the token itself.
const sessionCookie = "console_session"

type whoKey struct{}

// who is the authenticated user of a request, for the audit stream.
func who(r *http.Request) string {
	w, _ := r.Context().Value(whoKey{}).(string)
	return w
}

// authenticate lets a request through when it carries the token (bearer
// header or session cookie) or the proxy's user header; with neither
// configured, when it comes from a loopback address. The login page and
// the static assets need no authentication.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, ok := s.identify(r)
		open := r.URL.Path == "/login" || strings.HasPrefix(r.URL.Path, "/static/")
		switch {
		case ok:
		case s.token == nil && s.cfg.ProxyHeader == "":
			// No authentication configured: loopback only, whatever the
			// listener (defence in depth behind fleetctl's own check).
			s.fail(w, r, http.StatusForbidden, "this console has no authentication configured and serves loopback clients only")
			return
		case open:
		case s.token != nil && r.Method == http.MethodGet && r.Header.Get("Authorization") == "":
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		default:
			if s.token != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="analysisfleet console"`)
			}
			s.fail(w, r, http.StatusUnauthorized, "authentication required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, user)))
	})
}

// identify returns who sent r and whether r is authenticated.
func (s *Server) identify(r *http.Request) (string, bool) {
	if h := s.cfg.ProxyHeader; h != "" {
		if u := strings.TrimSpace(r.Header.Get(h)); u != "" {
			return textfmt.Clip(u, 200), true
		}
	}
	if s.token != nil {
		if a := r.Header.Get("Authorization"); a != "" {
			tok, found := strings.CutPrefix(a, "Bearer ")
			if found && s.tokenOK(tok) {
				return "token@" + remoteIP(r), true
			}
			return "", false
		}
		if c, err := r.Cookie(sessionCookie); err == nil &&
			subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.session)) == 1 {
			return "token@" + remoteIP(r), true
		}
		return "", false
	}
	if s.cfg.ProxyHeader == "" && isLoopback(r.RemoteAddr) {
		return "local@" + remoteIP(r), true
	}
	return "", false
}

// tokenOK compares in constant time (digests, so the length leaks nothing).
func (s *Server) tokenOK(tok string) bool {
	a, b := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256(s.token)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// IsLoopbackAddr reports whether a listen address (host:port) binds to
// loopback only: 127.0.0.0/8, ::1 or localhost. An empty host (all
// interfaces) is not loopback.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

type loginData struct {
	Next  string
	Error string
	Token bool
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	d := loginData{Next: safeNext(r.URL.Query().Get("next")), Token: s.token != nil}
	s.render(w, r, http.StatusOK, "login", "Log in", "", d)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	if s.token == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if !s.loginAllowed() {
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, http.StatusTooManyRequests, "too many failed logins: try again in a minute")
		return
	}
	if !s.tokenOK(r.PostFormValue("token")) {
		s.loginFailed()
		s.log.Warn("console login refused", zap.String("remote", remoteIP(r)))
		s.render(w, r, http.StatusUnauthorized, "login", "Log in", "",
			loginData{Next: next, Token: true, Error: "That token is not this console's."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.session, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds())})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// maxLoginFailures is how many failed logins a console takes per minute
// (all clients together): guessing a 16-character token stays hopeless.
const maxLoginFailures = 10

// loginAllowed reports whether fewer than maxLoginFailures logins failed
// within the last minute.
func (s *Server) loginAllowed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.now().Add(-time.Minute)
	for len(s.failures) > 0 && s.failures[0].Before(cut) {
		s.failures = s.failures[1:]
	}
	return len(s.failures) < maxLoginFailures
}

func (s *Server) loginFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, s.now())
}

// safeNext keeps a redirect target on this site: a path, never "//host".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}
