// Package simtest is what the tests of the simulators (sim/…) and of the
// drivers that run against them (edr/…) share: a manual clock to give a
// simulator and a driver as their Now, and a test server for a simulator
// that is closed, hung requests first, when the test ends.
package simtest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Clock is a manual clock: its time moves only when the test says so. Safe
// for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time (a simulator's or driver's Config.Now).
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Simulator is a simulated API: a handler whose Close releases the requests
// it holds (hung on purpose).
type Simulator interface {
	http.Handler
	Close()
}

// Serve starts s on a loopback test server. When the test ends s is closed
// first, so its hung requests return, then the server.
func Serve(t testing.TB, s Simulator) *httptest.Server {
	t.Helper()
	return ServeHandler(t, s, s)
}

// ServeHandler is Serve with h, a handler in front of s (a fault the test
// injects), answering the requests.
func ServeHandler(t testing.TB, s Simulator, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close) // runs first
	return srv
}
