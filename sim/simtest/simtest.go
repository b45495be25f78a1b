// Package simtest is what the tests of the simulators (sim/…) and of the
// drivers that run against them (edr/…) share: a test server for a
// simulator that is closed, hung requests first, when the test ends, a
// request whose whole answer is read, and the check that Close releases a
// hung request. Their manual clock is internal/testutil's Clock.
package simtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

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

// Do sends req with c and reads the whole answer: it returns the response,
// its body read and closed, and that body. It fails the test when the
// request or the read fails.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return resp, body
}

// CloseReleases checks that s.Close releases a request s holds on purpose
// (a Hang or AfterApply fault the test added). It sends req with c in the
// background and waits, at most five seconds, until held reports that s
// holds it; it fails the test if the answer came all the same, or if the
// request has not returned five seconds after s.Close.
func CloseReleases(t testing.TB, s Simulator, c *http.Client, req *http.Request, held func() bool) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); !held(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: not held after 5s", req.Method, req.URL.Path)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("%s %s: answered before Close (%v)", req.Method, req.URL.Path, err)
	default:
	}
	s.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s %s: Close did not release the hung request", req.Method, req.URL.Path)
	}
}
