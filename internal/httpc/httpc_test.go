package httpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSig is a query-string signature that must never reach an error.
const fakeSig = "Zm9vYmFyU2lnbmF0dXJlLXNlY3JldA"

func signedPath(path string) string {
	return path + "?X-Amz-Signature=" + fakeSig + "&X-Amz-Credential=AKIAEXAMPLE%2Fsecret"
}

func requireNoSecret(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	require.NotContains(t, err.Error(), fakeSig)
	require.NotContains(t, err.Error(), "X-Amz")
	require.NotContains(t, err.Error(), "AKIAEXAMPLE")
	require.NotContains(t, fmt.Sprintf("%+v", err), fakeSig)
}

// startServer runs h on a loopback test server closed at cleanup.
func startServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	return startReleasable(t, func(<-chan struct{}) http.HandlerFunc { return h })
}

// startRepeater starts a server that answers ?n=N with s N times.
func startRepeater(t *testing.T, s string) *httptest.Server {
	t.Helper()
	return startServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = io.WriteString(w, strings.Repeat(s, n))
	})
}

// startReleasable is startServer for handlers that block: release is closed
// at cleanup, before the server, so they return.
func startReleasable(t *testing.T, mk func(release <-chan struct{}) http.HandlerFunc) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(mk(release))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c := New(cfg)
	t.Cleanup(c.closeIdle)
	return c
}

func get(t *testing.T, ctx context.Context, rawURL string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	return req
}

func TestDoReturnsResponseForEveryStatus(t *testing.T) {
	t.Parallel()
	for _, status := range []int{200, 201, 204, 304, 400, 401, 403, 404, 409, 429, 500, 502, 503} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			body := fmt.Sprintf(`{"status":%d}`, status)
			if status == 204 || status == 304 {
				body = ""
			}
			srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Test", "yes")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, body)
			})
			c := newTestClient(t, Config{Service: "cbc"})
			resp, err := c.Do(get(t, t.Context(), srv.URL+signedPath("/api/v1/thing")))
			require.NoError(t, err)
			require.Equal(t, status, resp.Status)
			require.Equal(t, body, string(resp.Body))
			require.Equal(t, "yes", resp.Header.Get("X-Test"))
			if status < 400 {
				require.NoError(t, resp.Err())
				return
			}
			var se *StatusError
			require.ErrorAs(t, resp.Err(), &se)
			require.Equal(t, status, se.Status)
			require.Equal(t, "cbc", se.Service)
			require.Equal(t, http.MethodGet, se.Method)
			require.Equal(t, srv.URL+"/api/v1/thing", se.Path)
			require.Equal(t, body, se.Body)
			require.Contains(t, se.Error(), fmt.Sprintf("HTTP %d", status))
			requireNoSecret(t, se)
		})
	}
}

func TestStatusErrorRetryAfter(t *testing.T) {
	t.Parallel()
	date := time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		name       string
		status     int
		retryAfter string
		min, max   time.Duration
	}{
		{"429 seconds", 429, "7", 7 * time.Second, 7 * time.Second},
		{"503 seconds", 503, "120", 2 * time.Minute, 2 * time.Minute},
		{"503 HTTP-date", 503, date, 55 * time.Second, time.Minute},
		{"429 absent", 429, "", 0, 0},
		{"429 garbage", 429, "soon", 0, 0},
		{"429 capped", 429, "86400", MaxRetryAfter, MaxRetryAfter},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
				if c.retryAfter != "" {
					w.Header().Set("Retry-After", c.retryAfter)
				}
				w.WriteHeader(c.status)
			})
			c2 := newTestClient(t, Config{})
			resp, err := c2.Do(get(t, t.Context(), srv.URL))
			require.NoError(t, err)
			err = resp.Err()
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.GreaterOrEqual(t, se.RetryAfter, c.min)
			require.LessOrEqual(t, se.RetryAfter, c.max)
			require.True(t, IsRetryable(err))
			require.Equal(t, se.RetryAfter, RetryAfterOf(fmt.Errorf("wrapped: %w", err)))
			if se.RetryAfter > 0 {
				require.Contains(t, err.Error(), "retry after")
			} else {
				require.NotContains(t, err.Error(), "retry after")
			}
		})
	}
}

func TestStatusErrorBodySnippet(t *testing.T) {
	t.Parallel()
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "line one\nline\ttwo\x00\x1b[31m"+strings.Repeat("x", 1000))
	})
	c := newTestClient(t, Config{})
	resp, err := c.Do(get(t, t.Context(), srv.URL))
	require.NoError(t, err)
	var se *StatusError
	require.ErrorAs(t, resp.Err(), &se)
	require.LessOrEqual(t, len(se.Body), maxErrorBodySnippet)
	require.True(t, strings.HasPrefix(se.Body, "line one line two  [31mxxx"), se.Body)
	require.NotContains(t, se.Error(), "\n")
	require.NotContains(t, se.Error(), "\x1b")
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]bool{
		408: true, 425: true, 429: true, 500: true, 502: true, 503: true, 504: true, 507: true, 599: true,
		400: false, 401: false, 403: false, 404: false, 409: false, 410: false, 412: false, 422: false,
		501: false, 505: false,
	} {
		se := &StatusError{Status: status}
		require.Equal(t, want, se.Retryable(), "status %d", status)
		require.Equal(t, want, IsRetryable(fmt.Errorf("op: %w", se)), "wrapped status %d", status)
	}
	te := &TransportError{Err: errors.New("connection reset")}
	require.True(t, te.Retryable())
	require.True(t, IsRetryable(fmt.Errorf("op: %w", te)))
	require.False(t, IsRetryable(ErrTooLarge))
	require.False(t, IsRetryable(errors.New("plain")))
	require.False(t, IsRetryable(nil))
}

type hinted struct {
	d   time.Duration
	err error
}

func (h *hinted) Error() string                 { return "hinted: " + h.err.Error() }
func (h *hinted) Unwrap() error                 { return h.err }
func (h *hinted) RetryAfterHint() time.Duration { return h.d }

func TestRetryAfterOf(t *testing.T) {
	t.Parallel()
	se := &StatusError{Status: 429, RetryAfter: 5 * time.Second}
	require.Equal(t, 5*time.Second, RetryAfterOf(se))
	require.Equal(t, 5*time.Second, RetryAfterOf(fmt.Errorf("x: %w", se)))
	require.Equal(t, 9*time.Second, RetryAfterOf(&hinted{9 * time.Second, se}), "the outer hint wins")
	require.Zero(t, RetryAfterOf(errors.New("plain")))
	require.Zero(t, RetryAfterOf(nil))
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"   ", 0},
		{"0", 0},
		{"5", 5 * time.Second},
		{" 5 ", 5 * time.Second},
		{"1.5", 1500 * time.Millisecond},
		{"-5", 0},
		{"-0", 0},
		{"garbage", 0},
		{"5s", 0},
		{"NaN", 0},
		{"599", 599 * time.Second},
		{"600", MaxRetryAfter},
		{"3600", MaxRetryAfter},
		{"99999999999", MaxRetryAfter}, // overflows a Duration when multiplied
		{"1e300", MaxRetryAfter},       // likewise
		{"Inf", MaxRetryAfter},         // ParseFloat accepts it
		{"Wed, 01 May 2024 12:00:30 GMT", 30 * time.Second},
		{"Wednesday, 01-May-24 12:01:00 GMT", time.Minute}, // RFC 850
		{"Wed May  1 12:02:00 2024", 2 * time.Minute},      // ANSI C
		{"Wed, 01 May 2024 11:59:00 GMT", 0},               // in the past
		{"Wed, 01 May 2024 12:00:00 GMT", 0},               // now
		{"Thu, 02 May 2024 12:00:00 GMT", MaxRetryAfter},   // capped
		{"Fri, 31 Dec 9999 23:59:59 GMT", MaxRetryAfter},
		{"Mon, 01 Jan 0001 00:00:00 GMT", 0},
		{"Wed, 01 May 2024 12:00:30", 0}, // no zone: not an HTTP-date
	} {
		require.Equal(t, c.want, ParseRetryAfter(c.in, now), "%q", c.in)
	}
}

func TestDoMaxBody(t *testing.T) {
	t.Parallel()
	srv := startRepeater(t, "a")
	c := newTestClient(t, Config{MaxBody: 100})
	resp, err := c.Do(get(t, t.Context(), srv.URL+"/x?n=100"))
	require.NoError(t, err)
	require.Len(t, resp.Body, 100)

	_, err = c.Do(get(t, t.Context(), srv.URL+"/x?n=101&X-Amz-Signature="+fakeSig))
	require.ErrorIs(t, err, ErrTooLarge)
	require.False(t, IsRetryable(err), "too large is permanent")
	requireNoSecret(t, err)

	_, err = c.Do(get(t, t.Context(), srv.URL+"/x?n=1000000"))
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestDoMaxBodyAppliesToErrorResponses(t *testing.T) {
	t.Parallel()
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, strings.Repeat("e", 5000))
	})
	c := newTestClient(t, Config{MaxBody: 1000})
	_, err := c.Do(get(t, t.Context(), srv.URL))
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestStreamCap(t *testing.T) {
	t.Parallel()
	srv := startRepeater(t, "s")
	c := newTestClient(t, Config{MaxBody: 80})
	for _, tc := range []struct {
		name  string
		n     int
		max   int64
		limit bool
	}{
		{"at the stream cap", 50, 50, false},
		{"over the stream cap", 51, 50, true},
		{"far over the stream cap", 1 << 20, 50, true},
		{"default cap is MaxBody", 80, 0, false},
		{"over MaxBody by default", 81, 0, true},
		{"stream cap above MaxBody", 200, 300, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := c.Stream(get(t, t.Context(), srv.URL+"/s?n="+strconv.Itoa(tc.n)), tc.max)
			require.NoError(t, err, "the cap is only hit while reading")
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			b, err := io.ReadAll(resp.Body)
			if tc.limit {
				require.ErrorIs(t, err, ErrTooLarge)
				require.LessOrEqual(t, len(b), int(cmpOr(tc.max, 80))+1)
				return
			}
			require.NoError(t, err)
			require.Len(t, b, tc.n)
		})
	}
}

func cmpOr(a, b int64) int64 {
	if a != 0 {
		return a
	}
	return b
}

func TestStreamNon2xx(t *testing.T) {
	t.Parallel()
	var followed atomic.Int32
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "busy")
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/elsewhere":
			followed.Add(1)
		}
	})
	c := newTestClient(t, Config{Service: "sophos"})
	_, err := c.Stream(get(t, t.Context(), srv.URL+signedPath("/busy")), 0)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusServiceUnavailable, se.Status)
	require.Equal(t, 3*time.Second, se.RetryAfter)
	require.Equal(t, "busy", se.Body)
	require.True(t, IsRetryable(err))
	requireNoSecret(t, err)

	_, err = c.Stream(get(t, t.Context(), srv.URL+signedPath("/moved")), 0)
	require.ErrorContains(t, err, "unexpected status 302")
	requireNoSecret(t, err)
	require.Zero(t, followed.Load(), "redirect must not be followed")
}

// hang blocks a handler until the client gives up or the test ends.
func hang(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-release:
	}
}

func TestDoTimeoutOnHungServer(t *testing.T) {
	t.Parallel()
	srv := startReleasable(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/mid-body" {
				w.Header().Set("Content-Length", "1000")
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
			}
			hang(w, r, release)
		}
	})
	c := newTestClient(t, Config{Service: "cytomic", Timeout: 100 * time.Millisecond})
	for _, path := range []string{"/no-headers", "/mid-body"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			_, err := c.Do(get(t, t.Context(), srv.URL+signedPath(path)))
			require.Less(t, time.Since(start), 10*time.Second)
			var te *TransportError
			require.ErrorAs(t, err, &te)
			require.True(t, IsRetryable(err))
			require.Equal(t, "cytomic", te.Service)
			require.Equal(t, srv.URL+path, te.Path)
			require.Contains(t, err.Error(), srv.URL+path)
			requireNoSecret(t, err)
			var ue *url.Error
			require.False(t, errors.As(err, &ue), "the *url.Error carrying the full URL is dropped")
		})
	}
}

func TestStreamTimeoutWhileReading(t *testing.T) {
	t.Parallel()
	srv := startReleasable(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "first chunk")
			w.(http.Flusher).Flush()
			hang(w, r, release)
		}
	})
	c := newTestClient(t, Config{Timeout: 100 * time.Millisecond})
	resp, err := c.Stream(get(t, t.Context(), srv.URL+signedPath("/export")), 0)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.True(t, IsRetryable(err))
	requireNoSecret(t, err)
}

func TestTransportErrorConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	c := newTestClient(t, Config{Service: "sampledb"})
	_, err := c.Do(get(t, t.Context(), addr+signedPath("/job")))
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.True(t, IsRetryable(err))
	requireNoSecret(t, err)
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	var followed atomic.Int32
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/302":
			w.Header().Set("Location", "/target?token=abc")
			w.WriteHeader(http.StatusFound)
		case "/307":
			w.Header().Set("Location", "https://attacker.example/steal")
			w.WriteHeader(http.StatusTemporaryRedirect)
		default:
			followed.Add(1)
		}
	})
	c := newTestClient(t, Config{})
	req := get(t, t.Context(), srv.URL+"/302")
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusFound, resp.Status)
	require.Equal(t, "/target?token=abc", resp.Header.Get("Location"))
	require.NoError(t, resp.Err())

	resp, err = c.Do(get(t, t.Context(), srv.URL+"/307"))
	require.NoError(t, err)
	require.Equal(t, http.StatusTemporaryRedirect, resp.Status)
	require.Equal(t, "https://attacker.example/steal", resp.Header.Get("Location"))
	require.Zero(t, followed.Load())
}

func TestUserAgent(t *testing.T) {
	t.Parallel()
	uas := make(chan string, 2)
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) { uas <- r.Header.Get("User-Agent") })

	c := newTestClient(t, Config{UserAgent: "analysisfleet/1.2.3"})
	req := get(t, t.Context(), srv.URL)
	req.Header.Set("User-Agent", "caller-set")
	_, err := c.Do(req)
	require.NoError(t, err)
	require.Equal(t, "analysisfleet/1.2.3", <-uas)

	bare := newTestClient(t, Config{})
	_, err = bare.Do(get(t, t.Context(), srv.URL))
	require.NoError(t, err)
	require.NotEmpty(t, <-uas)
}

// fakeLimiter records the limiter protocol.
type fakeLimiter struct {
	mu        sync.Mutex
	hits      *atomic.Int32 // server hits, to check Wait precedes each request
	waits     []int32       // server hits seen at each Wait
	throttled []time.Duration
	waitErr   error
}

func (l *fakeLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits = append(l.waits, l.hits.Load())
	return l.waitErr
}

func (l *fakeLimiter) Throttled(ctx context.Context, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttled = append(l.throttled, d)
}

func (l *fakeLimiter) snapshot() ([]int32, []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int32(nil), l.waits...), append([]time.Duration(nil), l.throttled...)
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/429-with":
			w.Header().Set("Retry-After", "42")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/429-without":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/503":
			w.Header().Set("Retry-After", "9")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	lim := &fakeLimiter{hits: &hits}
	c := newTestClient(t, Config{Limiter: lim})

	for _, p := range []string{"/ok", "/429-with", "/429-without", "/503"} {
		_, err := c.Do(get(t, t.Context(), srv.URL+p))
		require.NoError(t, err)
	}
	resp, err := c.Stream(get(t, t.Context(), srv.URL+"/429-with"), 0)
	require.Nil(t, resp)
	require.Error(t, err)

	waits, throttled := lim.snapshot()
	require.Equal(t, []int32{0, 1, 2, 3, 4}, waits, "Wait before each request")
	require.Equal(t, []time.Duration{42 * time.Second, DefaultThrottle, 42 * time.Second}, throttled,
		"Throttled on 429 only, with Retry-After or DefaultThrottle")
}

func TestLimiterWaitErrorSendsNothing(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	errBudget := errors.New("fleet budget exhausted")
	c := newTestClient(t, Config{Limiter: &fakeLimiter{hits: &hits, waitErr: errBudget}})
	_, err := c.Do(get(t, t.Context(), srv.URL))
	require.ErrorIs(t, err, errBudget)
	_, err = c.Stream(get(t, t.Context(), srv.URL), 0)
	require.ErrorIs(t, err, errBudget)
	require.Zero(t, hits.Load())
}

func TestParentContextCancel(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	srv := startReleasable(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			hang(w, r, release)
		}
	})
	c := newTestClient(t, Config{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-arrived:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := c.Do(get(t, ctx, srv.URL+signedPath("/hang")))
	<-done
	require.ErrorIs(t, err, context.Canceled)
	var te *TransportError
	require.False(t, errors.As(err, &te), "cancellation is not a transport failure")
	requireNoSecret(t, err)

	// Already cancelled before sending.
	_, err = c.Do(get(t, ctx, srv.URL))
	require.ErrorIs(t, err, context.Canceled)
}

func TestParentDeadline(t *testing.T) {
	t.Parallel()
	srv := startReleasable(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { hang(w, r, release) }
	})
	c := newTestClient(t, Config{Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Do(get(t, ctx, srv.URL))
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, r.URL.Query().Get("i"))
	})
	lim := &fakeLimiter{hits: &hits}
	c := newTestClient(t, Config{Limiter: lim, UserAgent: "ua"})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			resp, err := c.Do(get(t, t.Context(), srv.URL+"/?i="+strconv.Itoa(i)))
			if !(err == nil && string(resp.Body) == strconv.Itoa(i)) {
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	waits, _ := lim.snapshot()
	require.Len(t, waits, 16)
	require.EqualValues(t, 16, hits.Load())
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://bucket.s3.amazonaws.com/exports/a.zip?X-Amz-Signature=abc&X-Amz-Credential=k": "https://bucket.s3.amazonaws.com/exports/a.zip",
		"https://user:pass@host.example:8443/p/q?x=1#frag":                                     "https://host.example:8443/p/q",
		"https://host/a%20b/c?token=t":                                                         "https://host/a%20b/c",
		"http://[::1]:80/x?y":                                                                  "http://[::1]:80/x",
		"https://host":                                                                         "https://host",
		"/relative/path?sig=s":                                                                 ":///relative/path",
		"https://host/%zz":                                                                     "<unparseable url>",
		"://nope":                                                                              "<unparseable url>",
	} {
		require.Equal(t, want, Redact(in), "%q", in)
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		"https://bucket.s3.amazonaws.com/a.zip", "host/path", "", "/p", "//h/p", "http:opaque",
		"https://a@b@c/p", "https://h/p%3Fq", "http:////a@b/x", "mailto:x@y", "https://[::1]:1/x",
		"https://h/p#", "https://h?", "https://h/p;x=1",
	} {
		f.Add(s)
	}
	const sentinel = "S3NT1N3Lsecret"
	f.Fuzz(func(t *testing.T, base string) {
		if strings.Contains(base, sentinel) {
			return
		}
		for _, raw := range []string{
			base + "?X-Amz-Signature=" + sentinel,
			base + "#" + sentinel,
			"https://user:" + sentinel + "@" + base,
			"https://" + sentinel + "@" + base,
		} {
			out := Redact(raw)
			require.NotContains(t, out, sentinel, "input %q", raw)
		}
		out := Redact(base)
		if out == "<unparseable url>" {
			return
		}
		u, err := url.Parse(out)
		if err != nil {
			return
		}
		require.Nil(t, u.User, "%q -> %q", base, out)
		require.Empty(t, u.RawQuery, "%q -> %q", base, out)
		require.Empty(t, u.Fragment, "%q -> %q", base, out)
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"", "0", "5", "1.5", "-5", "garbage", "99999999999", "1e300", "Inf", "NaN", "0x10", "1_000",
		"Wed, 01 May 2024 12:00:30 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, MaxRetryAfter)
		// Whole seconds of at least one: never lost (e.g. to overflow).
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil && n >= 1 {
			if n >= uint64(MaxRetryAfter/time.Second) {
				require.Equal(t, MaxRetryAfter, d, "%q", v)
			} else {
				require.Equal(t, time.Duration(n)*time.Second, d, "%q", v)
			}
		}
	})
}

// A 3xx whose Location does not parse comes back as a Response, never as an
// error quoting the Location (it may be a pre-signed URL with a signature).
func TestUnparseableLocationIsAResponseNotAnError(t *testing.T) {
	t.Parallel()
	const bad = "http://[::1%zz/obj?X-Amz-Signature=deadbeefsig"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", bad)
		w.WriteHeader(http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, Config{Service: "cbc"})
	resp, err := c.Do(get(t, context.Background(), srv.URL+"/download"))
	require.NoError(t, err)
	require.Equal(t, http.StatusFound, resp.Status)
	require.Equal(t, bad, resp.Header.Get("Location"), "the caller decides what to do with it")
}
