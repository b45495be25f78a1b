package httpc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var errLost = errors.New("lease lost")

// guardServer counts the requests that reached it.
func guardServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		got.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func guardedGet(t *testing.T, c *Client, ctx context.Context, url string) error {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	_, err = c.Do(req)
	return err
}

// TestGuardCheckedAgainAtTheWrite: a lease lost after the first check (the
// worker paused between deciding to send and sending) stops the request on
// the connection, before a byte of it is written.
func TestGuardCheckedAgainAtTheWrite(t *testing.T) {
	srv, got := guardServer(t)
	c := New(Config{Service: "test"})
	t.Cleanup(c.closeIdle)

	// Warm a keep-alive connection, then a fresh one: both paths.
	require.NoError(t, guardedGet(t, c, context.Background(), srv.URL))
	for _, fresh := range []bool{false, true} {
		if fresh {
			c.closeIdle()
		}
		var calls atomic.Int64
		guard := func() error {
			if calls.Add(1) == 1 {
				return nil // the check in send passes…
			}
			return errLost // …and the lease is gone by the write
		}
		before := got.Load()
		err := guardedGet(t, c, WithGuard(context.Background(), guard), srv.URL)
		require.ErrorIs(t, err, errLost, "fresh connection %v", fresh)
		require.Equal(t, before, got.Load(), "nothing reached the server (fresh connection %v)", fresh)
		require.GreaterOrEqual(t, calls.Load(), int64(2), "checked at the write")
	}
}

// TestGuardCheckedAtTheWriteWhateverTheTransport: a Client given a transport
// that does not guard its connections (a test's recorder, a transport built
// elsewhere) still refuses, after the check in send, a request whose lease is
// lost on the way to the wire: on a fresh connection and on a kept-alive one,
// whether the guard refuses when the connection is handed over or when the
// first header is buffered.
func TestGuardCheckedAtTheWriteWhateverTheTransport(t *testing.T) {
	srv, got := guardServer(t)
	bare := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(bare.CloseIdleConnections)
	var sent atomic.Int64
	custom := roundTripper(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return bare.RoundTrip(r)
	})
	c := New(Config{Service: "test", Transport: custom})

	for _, fresh := range []bool{false, true} {
		for failAt := int64(2); failAt <= 3; failAt++ {
			if fresh {
				bare.CloseIdleConnections()
			} else {
				require.NoError(t, guardedGet(t, c, context.Background(), srv.URL)) // keep one alive
			}
			var calls atomic.Int64
			guard := func() error {
				if calls.Add(1) < failAt {
					return nil // the check in send passes (and the hand-over, from 3)…
				}
				return errLost // …and the lease is gone before the bytes leave
			}
			before, sentBefore := got.Load(), sent.Load()
			err := guardedGet(t, c, WithGuard(context.Background(), guard), srv.URL)
			require.ErrorIs(t, err, errLost, "fresh connection %v, refused at check %d", fresh, failAt)
			require.Greater(t, sent.Load(), sentBefore, "the custom transport was used")
			require.Equal(t, before, got.Load(), "nothing reached the server (fresh connection %v, check %d)", fresh, failAt)
			require.GreaterOrEqual(t, calls.Load(), failAt, "checked after send")
		}
	}
	// The same Client sends when the guard agrees (the test is not vacuous).
	before := got.Load()
	require.NoError(t, guardedGet(t, c, WithGuard(context.Background(), func() error { return nil }), srv.URL))
	require.Equal(t, before+1, got.Load())
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestGuardIsPerRequest: a connection does not keep the guard of the
// request that used it before.
func TestGuardIsPerRequest(t *testing.T) {
	srv, got := guardServer(t)
	c := New(Config{Service: "test"})
	t.Cleanup(c.closeIdle)

	var lost atomic.Bool
	guard := func() error {
		if lost.Load() {
			return errLost
		}
		return nil
	}
	require.NoError(t, guardedGet(t, c, WithGuard(context.Background(), guard), srv.URL))
	lost.Store(true)
	// The same keep-alive connection serves a request of another job, and
	// one of no job.
	require.NoError(t, guardedGet(t, c, WithGuard(context.Background(), func() error { return nil }), srv.URL))
	require.NoError(t, guardedGet(t, c, context.Background(), srv.URL))
	require.ErrorIs(t, guardedGet(t, c, WithGuard(context.Background(), guard), srv.URL), errLost)
	require.Equal(t, int64(3), got.Load())
}

// TestRefuseLocalJudgesTheDialledAddress: whatever spelling the URL uses,
// the address actually dialled decides.
func TestRefuseLocalJudgesTheDialledAddress(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	tr := RefuseLocal(NewTransport())
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, host := range []string{"127.0.0.1", "localhost", "localhost.", "[::1]", "0.0.0.0"} {
		resp, err := c.Get("http://" + host + ":" + port + "/")
		if resp != nil {
			resp.Body.Close()
		}
		require.Error(t, err, host)
		if !strings.Contains(err.Error(), "no such host") {
			require.ErrorIs(t, err, ErrLocalTarget, host)
		}
	}
	// Without RefuseLocal the same server answers (the test is not vacuous).
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.0.1:" + port + "/")
	require.NoError(t, err)
	resp.Body.Close()
}
