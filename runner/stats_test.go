package runner

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// TestStatsSplitRetriesByCause: a retried call is counted as throttled
// (429), a server error (5xx) or a network failure (no answer, a timeout,
// another retryable status) from the error the driver returned; Retryable
// stays their sum.
func TestStatsSplitRetriesByCause(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), []edr.Driver{&fakeDriver{kind: edr.KindCBCEventExport}}, nil)
	r := w.runner
	status := func(code int) error {
		return edr.Wrap("sophos", "poll", &httpc.StatusError{Service: "sophos", Status: code})
	}
	for _, err := range []error{
		nil, nil, nil,
		&edr.Error{Vendor: "sophos", Op: "poll", Status: 429, Retryable: true, RetryAfter: time.Second}, // as vendorhttp maps it
		fmt.Errorf("poll: %w", status(429)),                // wrapped
		&httpc.StatusError{Service: "sophos", Status: 429}, // not wrapped in an edr.Error
		status(503), status(500), &edr.Error{Vendor: "sophos", Op: "start", Status: 502, Retryable: true},
		edr.Wrap("sophos", "poll", &httpc.TransportError{Err: errors.New("connection reset")}),
		&edr.Error{Vendor: "sophos", Op: "poll", Retryable: true, Msg: "timed out"},
		status(408),                                                         // another retryable status
		status(400), &edr.Error{Vendor: "sophos", Op: "start", Status: 503}, // permanent, whatever the status
	} {
		r.vendorCall("sophos", "poll", err, time.Now())
	}
	got := r.Stats().Vendors["sophos"]
	require.Equal(t, VendorStats{OK: 3, Throttled: 3, ServerError: 3, Network: 3, Retryable: 9, Permanent: 2}, got)

	// As published: the split and the sum.
	ws, err := DecodeWorkerStats(r.statsJSON())
	require.NoError(t, err)
	require.Equal(t, got, ws.Vendors["sophos"])
	old, err := DecodeWorkerStats([]byte(`{"since":"2026-12-03T08:00:00Z","vendors":{"cbc":{"ok":5,"retryable":2}}}`))
	require.NoError(t, err)
	require.Equal(t, VendorStats{OK: 5, Retryable: 2}, old.Vendors["cbc"], "the older format still reads")
}

// TestStatsSayWhenDrainingBegan: the published stats say the worker is
// draining, from when Drain began.
func TestStatsSayWhenDrainingBegan(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), []edr.Driver{&fakeDriver{kind: edr.KindCBCEventExport}}, nil)
	ws, err := DecodeWorkerStats(w.runner.statsJSON())
	require.NoError(t, err)
	require.False(t, ws.Draining)
	require.True(t, ws.DrainingSince.IsZero())

	before := time.Now().Truncate(time.Millisecond)
	w.runner.Drain(context.Background())
	after := time.Now()
	ws, err = DecodeWorkerStats(w.runner.statsJSON())
	require.NoError(t, err)
	require.True(t, ws.Draining)
	require.False(t, ws.DrainingSince.Before(before), "%s", ws.DrainingSince)
	require.False(t, ws.DrainingSince.After(after), "%s", ws.DrainingSince)
	since := ws.DrainingSince
	w.runner.Drain(context.Background()) // again: still from the first
	ws, err = DecodeWorkerStats(w.runner.statsJSON())
	require.NoError(t, err)
	require.Equal(t, since, ws.DrainingSince)
}
