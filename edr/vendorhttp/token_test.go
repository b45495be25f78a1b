package vendorhttp_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

// grant is a fake token endpoint: every fetch issues a new token.
type grant struct {
	fetches atomic.Int64
	ttl     time.Duration
	gate    chan struct{} // when set, fetches wait for it
	err     error
}

func (g *grant) fetch(ctx context.Context) (vendorhttp.Token, error) {
	n := g.fetches.Add(1)
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return vendorhttp.Token{}, ctx.Err()
		}
	}
	if g.err != nil {
		return vendorhttp.Token{}, g.err
	}
	return vendorhttp.Token{Value: fmt.Sprintf("access-token-%04d", n), TTL: g.ttl}, nil
}

// tokenOf returns the token Do hands send.
func tokenOf(t *testing.T, ts *vendorhttp.TokenSource) string {
	t.Helper()
	var got string
	refused, err := ts.Do(context.Background(), func(tok string) (bool, error) { got = tok; return false, nil })
	require.NoError(t, err)
	require.False(t, refused)
	return got
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	g := &grant{ttl: time.Hour}
	clk := testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	clock, advance := clk.Now, clk.Advance
	set := redact.New()
	ts := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch, Now: clock, Redact: set})

	first := tokenOf(t, ts)
	require.Equal(t, first, tokenOf(t, ts), "kept while good")
	advance(time.Hour - vendorhttp.MaxRefreshMargin - time.Second)
	require.Equal(t, first, tokenOf(t, ts))
	advance(time.Second) // a minute (the margin) before expiry
	second := tokenOf(t, ts)
	require.NotEqual(t, first, second, "replaced before it expires")
	require.EqualValues(t, 2, g.fetches.Load())
	require.Equal(t, "x "+redact.Mask+" "+redact.Mask, set.String("x "+first+" "+second), "every token fetched is redacted")

	// A short lifetime is replaced a tenth of it early; no lifetime means
	// until refused.
	g.ttl = 100 * time.Second
	ts = vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch, Now: clock})
	tok := tokenOf(t, ts)
	advance(89 * time.Second)
	require.Equal(t, tok, tokenOf(t, ts))
	advance(time.Second)
	require.NotEqual(t, tok, tokenOf(t, ts))
	g.ttl = 0
	ts = vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch, Now: clock})
	tok = tokenOf(t, ts)
	advance(1000 * time.Hour)
	require.Equal(t, tok, tokenOf(t, ts))
}

func TestRefusedTokenIsReplacedOnce(t *testing.T) {
	t.Parallel()
	for _, retryFresh := range []bool{false, true} {
		g := &grant{ttl: time.Hour}
		ts := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch, RetryFresh: retryFresh})
		cachedTok := tokenOf(t, ts)

		// A kept token refused: one new token, one more send.
		var sent []string
		refused, err := ts.Do(context.Background(), func(tok string) (bool, error) {
			sent = append(sent, tok)
			return tok == cachedTok, nil
		})
		require.NoError(t, err)
		require.False(t, refused)
		require.Len(t, sent, 2)
		require.Equal(t, cachedTok, sent[0])
		require.NotEqual(t, cachedTok, sent[1])
		require.Equal(t, sent[1], tokenOf(t, ts), "the new token is kept")

		// Refused whatever the token: no loop.
		sent = nil
		refused, err = ts.Do(context.Background(), func(tok string) (bool, error) { sent = append(sent, tok); return true, nil })
		require.NoError(t, err)
		require.True(t, refused, "the caller maps the last answer as refused credentials")
		require.Len(t, sent, 2)

		// A token fetched for the call itself and refused: RetryFresh
		// decides whether another is tried.
		ts = vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch, RetryFresh: retryFresh})
		before := g.fetches.Load()
		sent = nil
		refused, err = ts.Do(context.Background(), func(tok string) (bool, error) { sent = append(sent, tok); return true, nil })
		require.NoError(t, err)
		require.True(t, refused)
		if retryFresh {
			require.Len(t, sent, 2)
			require.Equal(t, before+2, g.fetches.Load())
		} else {
			require.Len(t, sent, 1, "a token fetched for this call and refused: the credentials are refused")
			require.Equal(t, before+1, g.fetches.Load())
		}
	}
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("token endpoint down")
	g := &grant{err: boom}
	ts := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch})
	called := false
	_, err := ts.Do(context.Background(), func(string) (bool, error) { called = true; return false, nil })
	require.ErrorIs(t, err, boom)
	require.False(t, called, "nothing is sent without a token")

	empty := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: func(context.Context) (vendorhttp.Token, error) {
		return vendorhttp.Token{}, nil
	}})
	_, err = empty.Do(context.Background(), func(string) (bool, error) { return false, nil })
	require.ErrorIs(t, err, vendorhttp.ErrNoToken)

	sendErr := errors.New("send failed")
	ok := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: (&grant{}).fetch})
	_, err = ok.Do(context.Background(), func(string) (bool, error) { return true, sendErr })
	require.ErrorIs(t, err, sendErr, "send's error wins")
}

// TestOneFetchAtATime: callers arriving while a token is fetched wait for
// that fetch and share its token; a caller whose context ends stops
// waiting.
func TestOneFetchAtATime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := &grant{ttl: time.Hour, gate: make(chan struct{})}
		ts := vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: g.fetch})
		const callers = 8
		got := make(chan string, callers)
		for range callers {
			go func() {
				_, _ = ts.Do(context.Background(), func(tok string) (bool, error) { got <- tok; return false, nil })
			}()
		}
		synctest.Wait() // one caller fetches, the others wait for it
		require.EqualValues(t, 1, g.fetches.Load())
		ctx, cancel := context.WithCancel(context.Background())
		impatient := make(chan error, 1)
		go func() {
			_, err := ts.Do(ctx, func(string) (bool, error) { return false, nil })
			impatient <- err
		}()
		synctest.Wait()
		cancel()
		require.ErrorIs(t, <-impatient, context.Canceled)
		close(g.gate)
		first := <-got
		for range callers - 1 {
			require.Equal(t, first, <-got)
		}
		require.EqualValues(t, 1, g.fetches.Load())
	})
}
