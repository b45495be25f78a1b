package bench

import (
	"bytes"
	"testing"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/require"
)

// TestSplitCPUByStack: samples in a driver count as vendor calls, the rate
// limiter inside a driver's call does not, the HTTP connection goroutines
// count by the vendors' share of requests, and the rest is the rest; the
// profile survives its wire format.
func TestSplitCPUByStack(t *testing.T) {
	var fns []*profile.Function
	loc := func(names ...string) []*profile.Location { // leaf first
		var out []*profile.Location
		for _, n := range names {
			f := &profile.Function{ID: uint64(len(fns) + 1), Name: n}
			fns = append(fns, f)
			out = append(out, &profile.Location{ID: f.ID, Line: []profile.Line{{Function: f}}})
		}
		return out
	}
	const s = 1e9 // one second of CPU, in ns
	samples := []*profile.Sample{
		{Value: []int64{4 * s}, Location: loc("encoding/json.Unmarshal",
			"github.com/analysisfleet/analysisfleet/edr/cbc.(*Driver).Poll", "github.com/analysisfleet/analysisfleet/runner.(*taskRun).pollOp")},
		{Value: []int64{1 * s}, Location: loc("github.com/redis/go-redis/v9.(*Client).Process",
			"github.com/analysisfleet/analysisfleet/state.(*RateLimiter).Wait",
			"github.com/analysisfleet/analysisfleet/internal/httpc.(*Client).Do",
			"github.com/analysisfleet/analysisfleet/edr/cbc.(*Driver).Poll")},
		{Value: []int64{2 * s}, Location: loc("bufio.(*Reader).Read", "net/http.(*persistConn).readLoop")},
		{Value: []int64{1 * s}, Location: loc("runtime.scanobject", "runtime.gcBgMarkWorker")},
		{Value: []int64{2 * s}, Location: loc("container/heap.Pop", "github.com/analysisfleet/analysisfleet/runner.(*sched).next")},
	}
	var locs []*profile.Location
	for _, smp := range samples {
		locs = append(locs, smp.Location...)
	}
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}},
		DurationNanos: 10 * s, Sample: samples, Location: locs, Function: fns,
	}
	var buf bytes.Buffer
	require.NoError(t, p.Write(&buf))
	p, err := profile.Parse(&buf)
	require.NoError(t, err)

	got, err := splitCPU(p, 0.75)
	require.NoError(t, err)
	require.InDelta(t, 1.0, got.Profiled, 1e-9, "10 s of CPU in 10 s")
	require.InDelta(t, 0.4, got.Drivers, 1e-9)
	require.InDelta(t, 0.1, got.Limiter, 1e-9, "the limiter inside a driver's call is the limiter")
	require.InDelta(t, 0.2, got.HTTPConns, 1e-9)
	require.InDelta(t, 0.1, got.GC, 1e-9)
	require.InDelta(t, 0.4+0.2*0.75, got.Vendor, 1e-9)
	require.InDelta(t, 1.0-0.55, got.Rest, 1e-9)

	_, err = splitCPU(&profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}, DurationNanos: 1}, 0)
	require.Error(t, err, "not a CPU profile")
}
