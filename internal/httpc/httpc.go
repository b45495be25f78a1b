// Package httpc is the HTTP hygiene shared by the SampleDB client and the EDR
// drivers: every request is bounded in time and in response size, carries the
// fleet's User-Agent, waits for the fleet-wide rate limiter, never follows a
// redirect with credentials, and fails with an error that says whether it is
// worth retrying (and after how long). URLs in errors are redacted to scheme,
// host and path, so query-string signatures and tokens never reach a log.
//
// A Client is safe for concurrent use.
package httpc

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout        = 30 * time.Second
	DefaultMaxBody        = 8 << 20
	DefaultThrottle       = time.Second // assumed when a 429 carries no Retry-After
	MaxRetryAfter         = 10 * time.Minute
	maxErrorBodySnippet   = 256
	defaultMaxIdlePerHost = 32
)

// ErrTooLarge is returned when a response body exceeds the configured cap.
// It is permanent: asking again returns the same body.
var ErrTooLarge = errors.New("response body exceeds size limit")

// Limiter paces requests across the whole fleet. state.RateLimiter implements
// it over Redis; nil means no pacing.
type Limiter interface {
	// Wait blocks until one more request may be sent, or ctx ends.
	Wait(ctx context.Context) error
	// Throttled records that the remote answered 429: nobody in the fleet
	// should send for d.
	Throttled(ctx context.Context, d time.Duration)
}

// Config configures a Client. The zero value is usable.
type Config struct {
	// Service names the remote in errors ("sampledb", "cbc", ...).
	Service string
	// UserAgent is sent on every request.
	UserAgent string
	// Timeout bounds one request, body read included. Default DefaultTimeout.
	Timeout time.Duration
	// MaxBody caps a response body. Default DefaultMaxBody.
	MaxBody int64
	// Limiter, when set, is waited on before every request and told of 429s.
	Limiter Limiter
	// Transport overrides the HTTP transport (tests, the download dialer,
	// metrics). Default NewTransport. Whatever it is, the Client checks the
	// request's guard (WithGuard) again on the connection before the
	// request's bytes leave (see guard.go); NewTransport, RefuseLocal and
	// GuardDial make that check exact.
	Transport http.RoundTripper
	// NoCorrelation leaves HeaderJob off (third-party download hosts).
	NoCorrelation bool
}

// HeaderJob carries the ID of the job a request is made for (see WithJob):
// a correlation ID for the vendor's support and for the fleet's own audits.
const HeaderJob = "X-Analysisfleet-Job"

type jobKey struct{}

// WithJob marks ctx as belonging to job id: requests sent with it carry
// HeaderJob.
func WithJob(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, jobKey{}, id)
}

type guardKey struct{}

// WithGuard attaches a check that runs immediately before each request made
// with ctx goes to the transport — after rate limiting and token fetches —
// and again on the connection right before the request is written (whatever
// the Client's transport: see guard.go), and refuses the request if it
// fails. The job runner uses it to re-check
// the job's lease at the last moment, so a worker that was paused between
// deciding to call and calling does not send the call after losing the job.
func WithGuard(ctx context.Context, guard func() error) context.Context {
	return context.WithValue(ctx, guardKey{}, guard)
}

// CheckGuard runs the guard WithGuard attached to ctx, if any. Batching
// drivers call it for each waiting caller before sending a shared request.
func CheckGuard(ctx context.Context) error {
	if guard, ok := ctx.Value(guardKey{}).(func() error); ok && guard != nil {
		return guard()
	}
	return nil
}

// IsJobKey and IsGuardKey tell a context that carries a job's ID and guard
// itself (the runner's job context, which holds them for every waiting job
// without two context.WithValue layers) which of its Value lookups are
// WithJob's and WithGuard's: it answers them with the ID (a string) and the
// guard (a func() error).
func IsJobKey(key any) bool { _, ok := key.(jobKey); return ok }

// IsGuardKey: see IsJobKey.
func IsGuardKey(key any) bool { _, ok := key.(guardKey); return ok }

// JobOf returns the job ID WithJob put in ctx, or "".
func JobOf(ctx context.Context) string {
	id, _ := ctx.Value(jobKey{}).(string)
	return id
}

// Client sends bounded requests. Redirects are never followed: a 3xx is
// returned to the caller as a Response, so credentials can't leak to the
// redirect target.
type Client struct {
	service   string
	userAgent string
	timeout   time.Duration
	maxBody   int64
	limiter   Limiter
	correlate bool
	// rt is used directly, not through http.Client: redirects are never
	// followed, and http.Client would parse a 3xx Location (and quote it,
	// signature and all, in an error) before we could refuse it.
	rt http.RoundTripper
}

// New returns a Client for cfg. Its requests are lease-guarded at the
// connection whatever cfg.Transport is (see WithGuard).
func New(cfg Config) *Client {
	tr := cfg.Transport
	if tr == nil {
		tr = NewTransport()
	}
	return &Client{
		service:   cmp.Or(cfg.Service, "http"),
		userAgent: cfg.UserAgent,
		timeout:   cmp.Or(cfg.Timeout, DefaultTimeout),
		maxBody:   cmp.Or(cfg.MaxBody, DefaultMaxBody),
		limiter:   cfg.Limiter,
		correlate: !cfg.NoCorrelation,
		rt:        tr,
	}
}

// Response is a fully read response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	method string
	path   string
	svc    string
}

// Err returns a *StatusError when the status is 400 or above, else nil.
func (r *Response) Err() error {
	if r.Status < 400 {
		return nil
	}
	return &StatusError{
		Service:    r.svc,
		Method:     r.method,
		Path:       r.path,
		Status:     r.Status,
		RetryAfter: ParseRetryAfter(r.Header.Get("Retry-After"), time.Now()),
		Body:       snippet(r.Body),
	}
}

// Do sends req and reads its whole body, at most MaxBody bytes. It returns a
// Response for every HTTP status; callers decide which statuses are errors
// (Response.Err covers the usual case). The error is non-nil only when no
// complete response arrived: a *TransportError (retryable), ErrTooLarge, or
// the caller's context error.
func (c *Client) Do(req *http.Request) (*Response, error) {
	return c.doInto(req, new(bytes.Buffer))
}

// doInto is Do reading the body into buf.
func (c *Client) doInto(req *http.Request, buf *bytes.Buffer) (*Response, error) {
	resp, cancel, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer resp.Body.Close()
	body, err := readCappedInto(buf, resp.Body, c.maxBody)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("%s %s %s: %w (%d bytes)", c.service, req.Method, redactPath(req.URL), err, c.maxBody)
		}
		return nil, c.transportErr(req, err)
	}
	return c.finish(req, resp, body), nil
}

// DoBorrowed is Do for a caller that is done with the body when fn returns:
// the body is read into a buffer that later calls reuse, so a large answer
// read often (a listing's pages) does not cost its size in garbage each
// time. fn must not keep Body, nor any slice of it, past its return. The
// error is Do's, or fn's.
func (c *Client) DoBorrowed(req *http.Request, fn func(*Response) error) error {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	resp, err := c.doInto(req, buf)
	if err != nil {
		return err
	}
	return fn(resp)
}

// bodyPool holds the buffers DoBorrowed reads bodies into; one grown past
// maxPooledBody is left to the garbage collector.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 4 << 20

// Stream sends req and returns the response with its body still open, capped
// at maxBytes (0 = MaxBody) and bounded by the request timeout. The caller
// must close Body. Non-2xx responses are read fully and returned as
// *StatusError.
func (c *Client) Stream(req *http.Request, maxBytes int64) (*http.Response, error) {
	resp, cancel, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer cancel()
		defer resp.Body.Close()
		body, _ := readCapped(resp.Body, 64<<10)
		r := c.finish(req, resp, body)
		if err := r.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s %s %s: unexpected status %d", c.service, req.Method, redactPath(req.URL), resp.StatusCode)
	}
	resp.Body = &streamBody{
		r:      io.LimitReader(resp.Body, cmp.Or(maxBytes, c.maxBody)+1),
		max:    cmp.Or(maxBytes, c.maxBody),
		closer: resp.Body,
		cancel: cancel,
		err:    func(e error) error { return c.transportErr(req, e) },
	}
	return resp, nil
}

// closeIdle closes idle keep-alive connections (tests use it so no
// connection goroutine outlives them).
func (c *Client) closeIdle() {
	if ci, ok := c.rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

func (c *Client) send(req *http.Request) (*http.Response, context.CancelFunc, error) {
	parent := req.Context()
	if c.limiter != nil {
		if err := c.limiter.Wait(parent); err != nil {
			return nil, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	req = req.WithContext(ctx)
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if id := JobOf(parent); id != "" && c.correlate {
		req.Header.Set(HeaderJob, id)
	}
	if err := CheckGuard(parent); err != nil {
		cancel()
		return nil, nil, err
	}
	// The connection checks the guard again at the write (see guard.go);
	// a request without one clears the previous request's.
	req = req.WithContext(withConnGuard(ctx, guardOf(parent)))
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		cancel()
		if gerr := refusedByGuard(parent, err); gerr != nil {
			return nil, nil, gerr
		}
		if parent.Err() != nil {
			return nil, nil, parent.Err()
		}
		return nil, nil, c.transportErr(req, err)
	}
	if resp.StatusCode == http.StatusTooManyRequests && c.limiter != nil {
		d := cmp.Or(ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), DefaultThrottle)
		c.limiter.Throttled(parent, d)
	}
	return resp, cancel, nil
}

func (c *Client) finish(req *http.Request, resp *http.Response, body []byte) *Response {
	return &Response{
		Status: resp.StatusCode,
		Header: resp.Header,
		Body:   body,
		method: req.Method,
		path:   redactPath(req.URL),
		svc:    c.service,
	}
}

func (c *Client) transportErr(req *http.Request, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop the full URL: it may carry a signature
	}
	return &TransportError{Service: c.service, Method: req.Method, Path: redactPath(req.URL), Err: err}
}

func readCapped(r io.Reader, max int64) ([]byte, error) {
	return readCappedInto(new(bytes.Buffer), r, max)
}

// readCappedInto reads r into buf, at most max bytes, and returns what it
// read (buf's bytes).
func readCappedInto(buf *bytes.Buffer, r io.Reader, max int64) ([]byte, error) {
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, ErrTooLarge
	}
	return buf.Bytes(), nil
}

type streamBody struct {
	r      io.Reader
	max    int64
	n      int64
	closer io.Closer
	cancel context.CancelFunc
	err    func(error) error
}

func (s *streamBody) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.n > s.max {
		return n, ErrTooLarge
	}
	if err != nil && err != io.EOF {
		return n, s.err(err)
	}
	return n, err
}

func (s *streamBody) Close() error {
	err := s.closer.Close()
	s.cancel()
	return err
}

// StatusError is an HTTP response with status >= 400.
type StatusError struct {
	Service    string
	Method     string
	Path       string // scheme://host/path, no query
	Status     int
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
	Body       string        // a short, sanitised prefix of the body
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s %s: HTTP %d", e.Service, e.Method, e.Path, e.Status)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Retryable reports whether the same request may succeed later: 408, 425,
// 429 and 5xx.
func (e *StatusError) Retryable() bool {
	switch {
	case e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooEarly,
		e.Status == http.StatusTooManyRequests:
		return true
	case e.Status >= 500:
		return e.Status != http.StatusNotImplemented && e.Status != http.StatusHTTPVersionNotSupported
	}
	return false
}

// TransportError is a request that got no complete response: refused,
// reset, timed out. It is retryable.
type TransportError struct {
	Service string
	Method  string
	Path    string
	Err     error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("%s %s %s: %v", e.Service, e.Method, e.Path, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Retryable is always true for transport failures.
func (e *TransportError) Retryable() bool { return true }

// IsRetryable reports whether err (or what it wraps) says it is retryable.
func IsRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

// RetryAfterOf returns the Retry-After carried by err, or 0.
//
// An error that states its own delay (RetryAfterHint, as *edr.Error does)
// wins over a *StatusError it wraps: the outer layer knows better.
func RetryAfterOf(err error) time.Duration {
	var ra interface{ RetryAfterHint() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfterHint()
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// ParseRetryAfter parses a Retry-After header (delay-seconds or HTTP-date)
// relative to now, capped at MaxRetryAfter. Unparseable or absent is 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if !(secs > 0) { // also NaN
			return 0
		}
		if secs >= MaxRetryAfter.Seconds() { // also Inf; converting would overflow
			return MaxRetryAfter
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// Redact returns u as scheme://host/path, without user info, query or
// fragment: safe to log.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable url>"
	}
	return redactPath(u)
}

func redactPath(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

func snippet(b []byte) string {
	if len(b) > maxErrorBodySnippet {
		b = b[:maxErrorBodySnippet]
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
	return strings.TrimSpace(s)
}
