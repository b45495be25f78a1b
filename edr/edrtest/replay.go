package edrtest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Testdata returns the file testdata/elem… of the package under test (the
// recorded answers each driver's testdata/README names the sources of).
func Testdata(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"testdata"}, elem...)...))
	require.NoError(t, err)
	return b
}

// Request is a request a Replay received or a Recorder passed on.
type Request struct {
	Method, Path, RawQuery string
	// URI is the request URI as sent: path and query.
	URI    string
	Header http.Header
	Body   []byte
}

// Replay is a vendor API played back from recorded answers, on a loopback
// test server closed with the test: each route ("METHOD /path", matched
// against the end of the request's path, the longest route winning) has a
// handler; every request is kept; a request no route takes is answered 404
// with NotFound's body and listed by Unrouted. Safe for concurrent use.
type Replay struct {
	Server *httptest.Server

	notFound string
	mu       sync.Mutex
	routes   map[string]http.HandlerFunc
	hits     map[string]int
	log      []Request
	unrouted []string
}

// NewReplay starts a Replay with no routes; notFound is the body of its 404s
// (the vendor's own error shape, say).
func NewReplay(t testing.TB, notFound string) *Replay {
	r := &Replay{notFound: notFound, routes: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Server.Close)
	return r
}

// Handle answers the requests route takes with h (replacing its handler).
func (r *Replay) Handle(route string, h http.HandlerFunc) {
	r.mu.Lock()
	r.routes[route] = h
	r.mu.Unlock()
}

// Answer answers route with status and body, as contentType.
func (r *Replay) Answer(route string, status int, contentType string, body []byte) {
	r.Handle(route, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write(body)
	})
}

// Hits returns how many requests route took.
func (r *Replay) Hits(route string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits[route]
}

// Requests returns every request received, in order.
func (r *Replay) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.log...)
}

// Unrouted returns "METHOD /path" of every request no route took.
func (r *Replay) Unrouted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.unrouted...)
}

// NotFound answers req as a request no route takes: 404, and listed by
// Unrouted (for a handler that finds nothing recorded for it).
func (r *Replay) NotFound(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.unrouted = append(r.unrouted, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	http.Error(w, r.notFound, http.StatusNotFound)
}

func (r *Replay) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	req.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.log = append(r.log, newRequest(req, body))
	var h http.HandlerFunc
	var route string
	for k, hh := range r.routes {
		method, suffix, _ := strings.Cut(k, " ")
		if method == req.Method && strings.HasSuffix(req.URL.Path, suffix) && len(k) > len(route) {
			h, route = hh, k
		}
	}
	if h != nil {
		r.hits[route]++
	}
	r.mu.Unlock()
	if h == nil {
		r.NotFound(w, req)
		return
	}
	h(w, req)
}
