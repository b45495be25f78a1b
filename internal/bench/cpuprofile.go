package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// CPUSplit is the worker's CPU over the window, from a CPU profile taken
// through its DEBUG_ADDR, split into the vendor calls themselves and the
// rest, in cores.
//
// A sample is in the vendor calls when its stack runs a driver's code
// (package edr/...: building the request, the HTTP exchange it waits on,
// reading and decoding the answer), except where the driver waits for the
// fleet's rate limiter (state.RateLimiter), which is the fleet's own cost
// and counts in the rest. The HTTP client's connection goroutines
// (net/http persistConn: writing requests, reading answers' headers) serve
// every host; they count in the vendor calls by the vendors' share of the
// window's HTTP requests (VendorShare), the rest of them with SampleDB's.
// Garbage collection and the scheduler count in the rest.
type CPUSplit struct {
	Seconds     float64 `json:"seconds"`         // profiled
	Profiled    float64 `json:"profiledCores"`   // every sample
	Drivers     float64 `json:"driverCores"`     // in edr/..., not waiting for the limiter
	Limiter     float64 `json:"limiterCores"`    // in state.RateLimiter
	HTTPConns   float64 `json:"httpConnCores"`   // net/http connection goroutines, every host
	GC          float64 `json:"gcCores"`         // runtime.gcBgMarkWorker and friends
	VendorShare float64 `json:"vendorShare"`     // vendors' share of the HTTP requests
	Vendor      float64 `json:"vendorCallCores"` // Drivers + HTTPConns × VendorShare
	Rest        float64 `json:"restCores"`       // Profiled − Vendor
}

// maxProfileBytes caps the profile read from the worker.
const maxProfileBytes = 64 << 20

// fetchCPUProfile takes a CPU profile of d from the worker's DEBUG_ADDR:
// parsed, and as it came (to be kept).
func fetchCPUProfile(ctx context.Context, addr string, d time.Duration) (*profile.Profile, []byte, error) {
	secs := max(1, int(d/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("CPU profile: %s", resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxProfileBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("CPU profile: %w", err)
	}
	p, err := profile.ParseData(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("CPU profile: %w", err)
	}
	return p, raw, nil
}

// splitCPU splits a CPU profile as CPUSplit says; vendorShare is the
// vendors' share of the HTTP requests the worker made.
func splitCPU(p *profile.Profile, vendorShare float64) (CPUSplit, error) {
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			idx = i
		}
	}
	if idx < 0 || p.DurationNanos <= 0 {
		return CPUSplit{}, fmt.Errorf("CPU profile: no cpu/nanoseconds samples")
	}
	secs := float64(p.DurationNanos) / 1e9
	s := CPUSplit{Seconds: secs, VendorShare: vendorShare}
	for _, smp := range p.Sample {
		cores := float64(smp.Value[idx]) / 1e9 / secs
		s.Profiled += cores
		switch classify(smp) {
		case inLimiter:
			s.Limiter += cores
		case inDriver:
			s.Drivers += cores
		case inHTTPConn:
			s.HTTPConns += cores
		case inGC:
			s.GC += cores
		}
	}
	s.Vendor = s.Drivers + s.HTTPConns*vendorShare
	s.Rest = s.Profiled - s.Vendor
	return s, nil
}

type cpuClass int

const (
	inOther cpuClass = iota
	inLimiter
	inDriver
	inHTTPConn
	inGC
)

// classify places a sample by the functions on its stack.
func classify(smp *profile.Sample) cpuClass {
	c := inOther
	for _, loc := range smp.Location {
		for _, ln := range loc.Line {
			if ln.Function == nil {
				continue
			}
			switch name := ln.Function.Name; {
			case strings.HasPrefix(name, "github.com/analysisfleet/analysisfleet/state.(*RateLimiter)"):
				return inLimiter // the limiter inside a driver's call is still the limiter
			case strings.HasPrefix(name, "github.com/analysisfleet/analysisfleet/edr/"):
				c = inDriver
			case c == inOther && strings.HasPrefix(name, "net/http.(*persistConn)."):
				c = inHTTPConn
			case c == inOther && (strings.HasPrefix(name, "runtime.gcBgMarkWorker") || strings.HasPrefix(name, "runtime.bgsweep") ||
				strings.HasPrefix(name, "runtime.bgscavenge")):
				c = inGC
			}
		}
	}
	return c
}

// vendorShare is the vendors' share of the HTTP requests in the phase.
func (p *Phase) vendorShare() float64 {
	var v float64
	for _, t := range p.Vendors {
		v += t.Requests
	}
	if all := v + p.SampleDB.Requests; all > 0 {
		return v / all
	}
	return 0
}

// profiledPhase is phase (with during) and a CPU profile of the worker
// over it, from its DEBUG_ADDR, split into Phase.CPUSplit and kept in the
// run's directory (Phase.CPUProfile).
func (b *run) profiledPhase(ctx context.Context, label string, d time.Duration, debugAddr string,
	during func(ctx context.Context, start time.Time)) (Phase, bool) {
	var prof *profile.Profile
	var raw []byte
	var profErr error
	p, ok := b.phase(ctx, d, func(ctx context.Context, start time.Time) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			prof, raw, profErr = fetchCPUProfile(ctx, debugAddr, d-2*time.Second)
		}()
		if during != nil {
			during(ctx, start)
		}
		<-done
	})
	if !ok {
		return p, false
	}
	if profErr == nil {
		var split CPUSplit
		if split, profErr = splitCPU(prof, p.vendorShare()); profErr == nil {
			p.CPUSplit = &split
		}
		// Kept for `go tool pprof` beside the worker's log.
		name := filepath.Join(b.dir, fmt.Sprintf("cpu-%d-%s.pprof", b.cfg.Jobs, label))
		if os.WriteFile(name, raw, 0o600) == nil {
			p.CPUProfile = name
		}
	}
	if profErr != nil {
		p.CPUSplitError = profErr.Error()
	}
	return p, true
}
