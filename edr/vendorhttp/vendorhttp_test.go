package vendorhttp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "s3cr3t-Vendor-Key/with+odd=chars"

// TestTable: the rows the drivers rely on, and agreement with
// httpc.StatusError.Retryable (SampleDB's client decides with it) for every
// status.
func TestTable(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]struct {
		class     vendorhttp.Class
		retryable bool
	}{
		100: {vendorhttp.Unexpected, false}, 200: {vendorhttp.Unexpected, false},
		301: {vendorhttp.Redirect, false}, 307: {vendorhttp.Redirect, false},
		400: {vendorhttp.BadRequest, false}, 401: {vendorhttp.Credentials, false},
		403: {vendorhttp.Forbidden, false}, 404: {vendorhttp.NotFound, false},
		408: {vendorhttp.Unavailable, true}, 409: {vendorhttp.Refused, false},
		410: {vendorhttp.Refused, false}, 422: {vendorhttp.Refused, false},
		425: {vendorhttp.Unavailable, true}, 429: {vendorhttp.Throttled, true},
		500: {vendorhttp.Unavailable, true}, 501: {vendorhttp.Unavailable, false},
		502: {vendorhttp.Unavailable, true}, 503: {vendorhttp.Unavailable, true},
		505: {vendorhttp.Unavailable, false}, 599: {vendorhttp.Unavailable, true},
		600: {vendorhttp.Unexpected, false},
	} {
		class, retryable := vendorhttp.Classify(status)
		require.Equal(t, want.class, class, "%d", status)
		require.Equal(t, want.retryable, retryable, "%d", status)
	}
	for status := 400; status < 600; status++ {
		_, retryable := vendorhttp.Classify(status)
		require.Equal(t, (&httpc.StatusError{Status: status}).Retryable(), retryable, "%d", status)
	}
}

// answer sends one GET to a server answering status, header and body, and
// returns the response as the drivers see it.
func answer(t *testing.T, status int, header http.Header, body string) *httpc.Response {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c := httpc.New(httpc.Config{Service: "vendor", Transport: srv.Client().Transport})
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/x?token="+secret, nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	return resp
}

// describe reads {"code","message","requestId"}.
func describe(_ int, body []byte) vendorhttp.Detail {
	s := string(body)
	field := func(k string) string {
		_, v, ok := strings.Cut(s, `"`+k+`":"`)
		if !ok {
			return ""
		}
		v, _, ok = strings.Cut(v, `"`)
		if !ok {
			return "" // cut off
		}
		return v
	}
	d := vendorhttp.Detail{Code: field("code"), Msg: field("message")}
	if id := field("requestId"); id != "" {
		d.Refs = []string{"requestId " + id}
	}
	return d
}

func newAPI() *vendorhttp.API {
	return &vendorhttp.API{
		Vendor:   "acme",
		Texts:    map[vendorhttp.Class]string{vendorhttp.Credentials: "ACME refused the key (check ACME_KEY)", vendorhttp.NotFound: ""},
		Throttle: 7 * time.Second,
		Describe: describe,
		Redact:   redact.New(secret),
	}
}

func TestErrorComposesTheVendorsWords(t *testing.T) {
	t.Parallel()
	a := newAPI()
	e := a.Error(vendorhttp.Call{Op: "poll", What: "GET job 7"},
		answer(t, 401, nil, `{"code":"BAD_KEY","message":"key `+secret+` unknown","requestId":"r-1"}`))
	require.Equal(t, "acme", e.Vendor)
	require.Equal(t, "poll", e.Op)
	require.Equal(t, 401, e.Status)
	require.False(t, e.Retryable)
	require.Equal(t, "BAD_KEY", e.Code)
	require.Equal(t, "GET job 7: ACME refused the key (check ACME_KEY): key [REDACTED] unknown (requestId r-1)", e.Msg)
	var se *httpc.StatusError
	require.ErrorAs(t, e, &se)
	require.Empty(t, se.Body, "the body is summarised, not kept")
	require.NotContains(t, e.Error(), secret)
	require.NotContains(t, e.Error(), "token=", "URLs lose their query")

	// Call.Msg replaces the class's text; a class mapped to "" has none.
	e = a.Error(vendorhttp.Call{Op: "cancel", Msg: "nothing was canceled"}, answer(t, 404, nil, `{"message":"no such run"}`))
	require.Equal(t, "nothing was canceled: no such run", e.Msg)
	e = a.Error(vendorhttp.Call{Op: "cancel"}, answer(t, 404, nil, `{"message":"no such run"}`))
	require.Equal(t, "no such run", e.Msg)
	// Detail.Explain replaces it when the vendor's code says more.
	a.Describe = func(int, []byte) vendorhttp.Detail {
		return vendorhttp.Detail{Code: "query_malformed_syntax", Explain: "the query was refused as malformed"}
	}
	e = a.Error(vendorhttp.Call{Op: "start"}, answer(t, 400, nil, `{}`))
	require.Equal(t, "the query was refused as malformed", e.Msg)
}

func TestErrorKeepsAnUndescribedBodyRedacted(t *testing.T) {
	t.Parallel()
	a := newAPI()
	cut := strings.Repeat("x", 256-len(secret)/2) + secret // the snippet keeps 256 bytes: the secret is cut
	for _, body := range []string{"denied to Bearer " + secret, cut} {
		e := a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 403, nil, body))
		require.Equal(t, "access forbidden", e.Msg, "the default text")
		require.Contains(t, e.Error(), redact.Mask)
		require.NotContains(t, e.Error(), secret[:redact.MinCut])
	}
	a.Quiet = true
	e := a.Error(vendorhttp.Call{Op: "token"}, answer(t, 500, nil, "your request was: client_secret=x"))
	require.NotContains(t, e.Error(), "client_secret", "a quiet API never quotes a body")
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	a := newAPI()
	e := a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 429, http.Header{"Retry-After": {"3"}}, ""))
	require.True(t, e.Retryable)
	require.Equal(t, 3*time.Second, e.RetryAfter)
	require.Equal(t, "rate limited", e.Msg)
	e = a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 429, nil, ""))
	require.Equal(t, 7*time.Second, e.RetryAfter, "API.Throttle when the 429 names no delay")
	require.Equal(t, 7*time.Second, httpc.RetryAfterOf(e.Err), "the wrapped StatusError agrees")
	a.Throttle = 0
	e = a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 429, nil, ""))
	require.Equal(t, httpc.DefaultThrottle, edr.RetryAfter(e))
	e = a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 503, http.Header{"Retry-After": {"2"}}, ""))
	require.True(t, e.Retryable)
	require.Equal(t, 2*time.Second, e.RetryAfter)
	e = a.Error(vendorhttp.Call{Op: "poll"}, answer(t, 302, nil, ""))
	require.False(t, e.Retryable)
	require.Equal(t, "unexpected redirect (not followed)", e.Msg)
	require.NoError(t, e.Err)
}

func TestStatusErrorOfAStream(t *testing.T) {
	t.Parallel()
	a := newAPI()
	e := a.StatusError(vendorhttp.Call{Op: "collect"}, &httpc.StatusError{Status: 503, RetryAfter: time.Second,
		Body: `{"message":"busy `})
	require.True(t, e.Retryable)
	require.Equal(t, time.Second, e.RetryAfter)
	require.Equal(t, "service unavailable", e.Msg, "a field cut off is left out")
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	a := newAPI()
	e := a.Malformed(vendorhttp.Call{Op: "start", What: "POST session"}, 200, errors.New("no id in "+secret))
	require.False(t, e.Retryable)
	require.ErrorIs(t, e, vendorhttp.ErrMalformed)
	require.Equal(t, "acme start: HTTP 200: POST session: malformed response: no id in [REDACTED]", e.Error())
	wrapped := errors.Join(vendorhttp.ErrMalformed, errors.New("x"))
	require.ErrorIs(t, a.Malformed(vendorhttp.Call{Op: "poll"}, 200, wrapped), wrapped, "not wrapped twice")
}

func TestNoAnswer(t *testing.T) {
	t.Parallel()
	a := newAPI()
	ctx := context.Background()
	te := &httpc.TransportError{Service: "acme", Method: "GET", Path: "https://x/y", Err: errors.New("connection reset")}
	err := a.NoAnswer(ctx, "poll", te)
	require.True(t, edr.IsRetryable(err))
	require.ErrorIs(t, err, te.Err)
	require.Contains(t, err.Error(), "no response (network error or timeout)")

	err = a.NoAnswer(ctx, "poll", httpc.ErrTooLarge)
	require.False(t, edr.IsRetryable(err))
	require.ErrorIs(t, err, httpc.ErrTooLarge)

	done, cancel := context.WithCancel(ctx)
	cancel()
	err = a.NoAnswer(done, "poll", te)
	require.ErrorIs(t, err, context.Canceled)
	var e *edr.Error
	require.False(t, errors.As(err, &e), "the caller's context ending is not a vendor failure")

	ve := &edr.Error{Vendor: "acme", Op: "poll", Msg: "kept"}
	require.Same(t, ve, a.NoAnswer(ctx, "poll", ve))
	require.NoError(t, a.NoAnswer(ctx, "poll", nil))
}

func TestMask(t *testing.T) {
	t.Parallel()
	a := newAPI()
	cause := errors.New("machine said " + secret)
	err := a.Mask(&edr.Error{Vendor: "acme", Op: "poll", Code: secret, Msg: "every machine failed: " + secret, Err: cause})
	var e *edr.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, redact.Mask, e.Code)
	require.Equal(t, "every machine failed: "+redact.Mask, e.Msg)
	require.ErrorIs(t, err, cause)
	require.NotContains(t, err.Error(), secret)
	require.NotContains(t, a.Mask(cause).Error(), secret)
	require.NoError(t, a.Mask(nil))
}
