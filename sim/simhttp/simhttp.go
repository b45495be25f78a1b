// Package simhttp is the plumbing every simulator in sim/ shares: fault
// switches (status storms with Retry-After, latency, hung responses,
// malformed bodies) applied in front of a simulator's handler, a log of every
// request it served, and the small JSON helpers. Faults can be switched from
// Go (tests, worker dev) or over HTTP at /_sim/faults (multi-process tests).
//
// Everything here is safe for concurrent use.
package simhttp

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is one injected misbehaviour. A request is affected by the first
// active fault whose Path prefix and Method match.
type Fault struct {
	// Name identifies the fault for Remove; optional.
	Name string `json:"name,omitempty"`
	// Path is a URL path prefix; empty matches every path.
	Path string `json:"path,omitempty"`
	// Method matches the HTTP method; empty matches any.
	Method string `json:"method,omitempty"`
	// Status, when non-zero, is answered instead of calling the simulator.
	Status int `json:"status,omitempty"`
	// RetryAfter is sent as Retry-After (whole seconds, rounded up) with Status.
	RetryAfter time.Duration `json:"retryAfter,omitempty"`
	// Latency delays the request before it is served (or failed).
	Latency time.Duration `json:"latency,omitempty"`
	// Hang holds the request until the client gives up or the simulator closes.
	Hang bool `json:"hang,omitempty"`
	// Malformed answers 200 with a body that is not valid JSON.
	Malformed bool `json:"malformed,omitempty"`
	// Echo, with Status, quotes the request's credentials back in the
	// answer's message, as careless servers do ("invalid token \"…\""):
	// the value of the header named Echo, or, for "body", the request body.
	Echo string `json:"echo,omitempty"`
	// Trickle serves the real answer one byte per Trickle (a vendor that
	// drips its response).
	Trickle time.Duration `json:"trickle,omitempty"`
	// AfterApply serves the request (its effects happen) and then hangs
	// instead of answering: "timed out after it already applied".
	AfterApply bool `json:"afterApply,omitempty"`
	// Count limits the fault to the next Count matching requests; 0 = no limit.
	Count int `json:"count,omitempty"`
	// For limits the fault to a window starting when it is added; 0 = no limit.
	For time.Duration `json:"for,omitempty"`
	// Probability applies the fault to this share of matching requests
	// (0 or 1 = all).
	Probability float64 `json:"probability,omitempty"`

	until time.Time
	used  int
}

// Request is one served request, as the log keeps it.
type Request struct {
	Time      time.Time `json:"time"` // when the request arrived
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Query     string    `json:"query,omitempty"`
	UserAgent string    `json:"userAgent"`
	// Job is the X-Analysisfleet-Job correlation header, if sent.
	Job     string `json:"job,omitempty"`
	Status  int    `json:"status"`
	Faulted string `json:"faulted,omitempty"` // name of the fault that answered, if any
	// BytesIn and BytesOut are the request body bytes the handler read and
	// the response body bytes it wrote (0 for answers a fault made up).
	BytesIn  int64 `json:"bytesIn,omitempty"`
	BytesOut int64 `json:"bytesOut,omitempty"`
}

// HeaderJob is the fleet's job correlation header (internal/httpc.HeaderJob).
const HeaderJob = "X-Analysisfleet-Job"

// Kit holds a simulator's faults and request log.
type Kit struct {
	mu     sync.Mutex
	faults []*Fault
	log    []Request
	stop   chan struct{}
	once   sync.Once
	now    func() time.Time
}

// New returns an empty Kit.
func New() *Kit { return &Kit{stop: make(chan struct{}), now: time.Now} }

// Add switches a fault on. It returns a function that switches it off.
func (k *Kit) Add(f Fault) (remove func()) {
	fp := &f
	k.mu.Lock()
	if f.For > 0 {
		fp.until = k.now().Add(f.For)
	}
	k.faults = append(k.faults, fp)
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		for i, x := range k.faults {
			if x == fp {
				k.faults = append(k.faults[:i], k.faults[i+1:]...)
				return
			}
		}
	}
}

// Remove switches off every fault with the given name.
func (k *Kit) Remove(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.faults[:0]
	for _, f := range k.faults {
		if f.Name != name {
			out = append(out, f)
		}
	}
	k.faults = out
}

// Clear switches every fault off.
func (k *Kit) Clear() {
	k.mu.Lock()
	k.faults = nil
	k.mu.Unlock()
}

// Close releases hung requests. Call it before closing the server.
func (k *Kit) Close() { k.once.Do(func() { close(k.stop) }) }

// Requests returns a copy of the request log.
func (k *Kit) Requests() []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Request(nil), k.log...)
}

// Len returns how many requests the log holds: with RequestsFrom, a reader
// can take the log in increments.
func (k *Kit) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.log)
}

// RequestsFrom returns a copy of the log from entry from on.
func (k *Kit) RequestsFrom(from int) []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	from = min(max(from, 0), len(k.log))
	return append([]Request(nil), k.log[from:]...)
}

// Count returns how many logged requests match method (empty = any) and path
// prefix.
func (k *Kit) Count(method, pathPrefix string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, r := range k.log {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, pathPrefix) {
			n++
		}
	}
	return n
}

func (k *Kit) pick(r *http.Request) *Fault {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for i := 0; i < len(k.faults); i++ {
		f := k.faults[i]
		if !f.until.IsZero() && now.After(f.until) {
			k.faults = append(k.faults[:i], k.faults[i+1:]...)
			i--
			continue
		}
		if f.Path != "" && !strings.HasPrefix(r.URL.Path, f.Path) {
			continue
		}
		if f.Method != "" && f.Method != r.Method {
			continue
		}
		if f.Probability > 0 && f.Probability < 1 && rand.Float64() >= f.Probability {
			continue
		}
		f.used++
		if f.Count > 0 && f.used >= f.Count {
			k.faults = append(k.faults[:i], k.faults[i+1:]...)
		}
		cp := *f
		return &cp
	}
	return nil
}

func (k *Kit) record(r *http.Request, at time.Time, status int, faulted string) {
	k.recordBytes(r, at, status, faulted, nil)
}

// recordBytes records a request served through rec, with its byte counts.
func (k *Kit) recordBytes(r *http.Request, at time.Time, status int, faulted string, rec *statusRecorder) {
	e := Request{
		Time: at, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		UserAgent: r.UserAgent(), Job: r.Header.Get(HeaderJob), Status: status, Faulted: faulted,
	}
	if rec != nil {
		e.BytesOut = rec.bytes
		if c, ok := r.Body.(*countingBody); ok {
			e.BytesIn = c.n
		}
	}
	k.mu.Lock()
	k.log = append(k.log, e)
	k.mu.Unlock()
}

// Wrap puts the fault switches and the request log in front of h, and
// serves the control endpoint at /_sim/faults:
//
//	GET    /_sim/faults        the active faults
//	POST   /_sim/faults        add one (a Fault as JSON; durations in nanoseconds)
//	DELETE /_sim/faults        clear all (or ?name=N to remove by name)
//	GET    /_sim/requests      the request log (?from=N: from entry N on)
func (k *Kit) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_sim/faults":
			k.serveControl(w, r)
			return
		case "/_sim/requests":
			k.serveRequests(w, r)
			return
		}
		at := k.now()
		if r.Body != nil {
			r.Body = &countingBody{ReadCloser: r.Body}
		}
		f := k.pick(r)
		if f == nil {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(rec, r)
			k.recordBytes(r, at, rec.status, "", rec)
			return
		}
		name := f.Name
		if name == "" {
			name = "fault"
		}
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				k.record(r, at, 0, name)
				return
			case <-k.stop:
				return
			}
		}
		switch {
		case f.AfterApply:
			h.ServeHTTP(discard{w.Header()}, r)
			k.record(r, at, 0, name)
			k.hang(r)
		case f.Hang:
			k.record(r, at, 0, name)
			k.hang(r)
		case f.Trickle > 0:
			rec := &bufferedWriter{h: http.Header{}, status: http.StatusOK}
			h.ServeHTTP(rec, r)
			for k, v := range rec.h {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.status)
			k.record(r, at, rec.status, name)
			fl, _ := w.(http.Flusher)
			for _, b := range rec.body {
				if _, err := w.Write([]byte{b}); err != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
				select {
				case <-time.After(f.Trickle):
				case <-r.Context().Done():
					return
				case <-k.stop:
					return
				}
			}
		case f.Malformed:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"data": [ {"id": "trunc`))
			k.record(r, at, http.StatusOK, name)
		case f.Status != 0:
			if f.RetryAfter > 0 {
				secs := int((f.RetryAfter + time.Second - 1) / time.Second)
				w.Header().Set("Retry-After", strconv.Itoa(secs))
			}
			msg := "injected fault"
			switch {
			case strings.EqualFold(f.Echo, "body"):
				b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
				msg = fmt.Sprintf("invalid request %q", b)
			case f.Echo != "":
				msg = fmt.Sprintf("invalid token %q", r.Header.Get(f.Echo))
			}
			WriteJSON(w, f.Status, map[string]any{"error": http.StatusText(f.Status), "message": msg})
			k.record(r, at, f.Status, name)
		default:
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(rec, r)
			k.recordBytes(r, at, rec.status, name, rec)
		}
	})
}

func (k *Kit) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-k.stop:
	}
}

// serveRequests answers GET /_sim/requests[?from=N]: the request log from
// entry N on (the multi-process checker reads it incrementally).
func (k *Kit) serveRequests(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	WriteJSON(w, http.StatusOK, k.RequestsFrom(from))
}

func (k *Kit) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		k.mu.Lock()
		out := make([]Fault, 0, len(k.faults))
		for _, f := range k.faults {
			out = append(out, *f)
		}
		k.mu.Unlock()
		WriteJSON(w, http.StatusOK, out)
	case http.MethodPost:
		var f Fault
		if err := ReadJSON(w, r, 1<<16, &f); err != nil {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		k.Add(f)
		WriteJSON(w, http.StatusCreated, f)
	case http.MethodDelete:
		if name := r.URL.Query().Get("name"); name != "" {
			k.Remove(name)
		} else {
			k.Clear()
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// Durations holds a duration per sample: what a simulator's SetRunFor
// overrides its configured run time with. Keys are sha256 hashes, set in
// any case and kept in lower case. It is not safe for concurrent use: the
// simulator's mutex guards it.
type Durations map[string]time.Duration

// Set makes d the duration of sha256; d <= 0 removes it.
func (m Durations) Set(sha256 string, d time.Duration) {
	if d <= 0 {
		delete(m, strings.ToLower(sha256))
		return
	}
	m[strings.ToLower(sha256)] = d
}

// Get returns the duration of sha256, a lower-case hash, or def when it has
// none (or sha256 is empty).
func (m Durations) Get(sha256 string, def time.Duration) time.Duration {
	if d, ok := m[sha256]; ok && sha256 != "" {
		return d
	}
	return def
}

// Tokens is the store of the access tokens a simulator's token endpoint
// issued, each with its expiry. Tokens are never dropped when they expire,
// only by Revoke. The zero value is an empty store; it is safe for
// concurrent use.
type Tokens struct {
	mu     sync.Mutex
	expiry map[string]time.Time // access token → expiry
	issued int
}

// Issue stores tok, valid until exp, and counts it as issued.
func (t *Tokens) Issue(tok string, exp time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expiry == nil {
		t.expiry = map[string]time.Time{}
	}
	t.expiry[tok] = exp
	t.issued++
}

// Valid says whether tok was issued, has not been revoked and has not
// expired at now.
func (t *Tokens) Valid(tok string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, known := t.expiry[tok]
	return known && now.Before(exp)
}

// Revoke invalidates every token issued so far.
func (t *Tokens) Revoke() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.expiry)
}

// List returns the tokens issued and not revoked, expired ones included, in
// no particular order.
func (t *Tokens) List() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.expiry))
}

// Issued returns how many tokens Issue stored, revoked ones included.
func (t *Tokens) Issued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issued
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ReadJSON decodes a request body of at most max bytes into v.
func ReadJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	return json.NewDecoder(http.MaxBytesReader(w, r.Body, max)).Decode(v)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// countingBody counts the request body bytes a handler reads.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n += int64(n)
	return n, err
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type bufferedWriter struct {
	h      http.Header
	status int
	body   []byte
}

func (b *bufferedWriter) Header() http.Header { return b.h }
func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}
func (b *bufferedWriter) WriteHeader(code int) { b.status = code }

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}
