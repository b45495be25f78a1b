package edrtest

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Query returns the request's query parameters.
func (r Request) Query() url.Values {
	q, _ := url.ParseQuery(r.RawQuery)
	return q
}

// newRequest is req as kept, with body, the bytes its body held.
func newRequest(req *http.Request, body []byte) Request {
	return Request{Method: req.Method, Path: req.URL.Path, RawQuery: req.URL.RawQuery,
		URI: req.URL.RequestURI(), Header: req.Header.Clone(), Body: body}
}

// Recorder is an http.RoundTripper that keeps every request a driver sends,
// body included, and passes it on to Next (http.DefaultTransport when nil);
// After, when set, sees every answer Next returns. Safe for concurrent use.
type Recorder struct {
	Next  http.RoundTripper
	After func(*http.Request, *http.Response)

	mu  sync.Mutex
	log []Request
}

// RoundTrip keeps req and passes it on.
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	r.mu.Lock()
	r.log = append(r.log, newRequest(req, body))
	r.mu.Unlock()
	next := r.Next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(req)
	if err == nil && r.After != nil {
		r.After(req, resp)
	}
	return resp, err
}

// Requests returns every request kept, in order.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.log...)
}

// Matching returns the requests kept with method and a path that ends in
// suffix, in order.
func (r *Recorder) Matching(method, suffix string) []Request {
	var out []Request
	for _, q := range r.Requests() {
		if q.Method == method && strings.HasSuffix(q.Path, suffix) {
			out = append(out, q)
		}
	}
	return out
}
