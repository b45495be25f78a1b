package runner

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// WorkerStats is what a worker publishes about itself with each session
// renewal (state.WorkerInfo.Stats): per vendor, the driver calls it made
// since it started, by result, and the calls queued and running in its
// lanes now. It costs the renewal one field of a few hundred bytes,
// whatever the number of jobs.
type WorkerStats struct {
	Since time.Time `json:"since"`
	// Draining: the worker began draining (Drain, at SIGTERM) at
	// DrainingSince: it takes no new work and hands each job's lease over
	// as the job reaches a safe point. Published with the next renewal
	// (every LEASE_TTL/3), so a quick drain may end before it shows.
	Draining      bool                   `json:"draining,omitempty"`
	DrainingSince time.Time              `json:"drainingSince,omitzero"`
	Vendors       map[string]VendorStats `json:"vendors,omitempty"`
}

// VendorStats is one vendor's share of WorkerStats.
type VendorStats struct {
	OK int64 `json:"ok"`
	// Retryable is every call retried: Throttled + ServerError + Network
	// (kept as the sum for readers of the older format, which had only it).
	Retryable   int64 `json:"retryable"`
	Throttled   int64 `json:"throttled"`   // of Retryable: answered 429
	ServerError int64 `json:"serverError"` // of Retryable: answered 5xx
	Network     int64 `json:"network"`     // of Retryable: no answer (network, timeouts) or another retryable status
	Permanent   int64 `json:"permanent"`   // refused for good
	Waiting     int   `json:"waiting"`     // calls queued in this worker's lanes
	Running     int   `json:"running"`     // calls in progress
}

// DecodeWorkerStats reads what a worker published (nil input: zero stats).
func DecodeWorkerStats(b []byte) (WorkerStats, error) {
	var s WorkerStats
	if len(b) == 0 {
		return s, nil
	}
	err := json.Unmarshal(b, &s)
	return s, err
}

// The outcomes of a driver call, as the published stats count them.
const (
	callOK = iota
	callThrottled
	callServerError
	callNetwork
	callPermanent
	callOutcomes
)

// callOutcome classifies a driver call's error: a retryable one by the
// HTTP status the vendor answered (edr.Error.Status, or an
// httpc.StatusError not wrapped in one): 429, 5xx, or none (network,
// timeouts) and any other retryable status.
func callOutcome(err error) int {
	switch {
	case err == nil:
		return callOK
	case !edr.IsRetryable(err):
		return callPermanent
	}
	status := 0
	var e *edr.Error
	var se *httpc.StatusError
	switch {
	case errors.As(err, &e) && e.Status != 0:
		status = e.Status
	case errors.As(err, &se):
		status = se.Status
	}
	switch {
	case status == http.StatusTooManyRequests:
		return callThrottled
	case status >= 500 && status <= 599:
		return callServerError
	}
	return callNetwork
}

// callTally counts driver calls by vendor and outcome, and when draining
// began.
type callTally struct {
	since      time.Time
	m          sync.Map     // vendor → *[callOutcomes]atomic.Int64
	drainBegan atomic.Int64 // Unix ms; 0: not draining
}

func (t *callTally) add(vendor string, outcome int) {
	v, ok := t.m.Load(vendor)
	if !ok {
		v, _ = t.m.LoadOrStore(vendor, new([callOutcomes]atomic.Int64))
	}
	v.(*[callOutcomes]atomic.Int64)[outcome].Add(1)
}

// draining records that draining began at at (the first call counts).
func (t *callTally) draining(at time.Time) { t.drainBegan.CompareAndSwap(0, at.UnixMilli()) }

// vendorCall records one driver call for the metrics and the published
// stats.
func (r *Runner) vendorCall(vendor, op string, err error, began time.Time) {
	r.tally.add(vendor, callOutcome(err))
	r.cfg.Observer.VendorCall(vendor, op, callResult(err), time.Since(began))
}

// Stats returns the worker's stats as published with each renewal.
func (r *Runner) Stats() WorkerStats {
	out := WorkerStats{Since: r.tally.since, Vendors: map[string]VendorStats{}}
	if ms := r.tally.drainBegan.Load(); ms != 0 {
		out.Draining, out.DrainingSince = true, time.UnixMilli(ms)
	}
	r.tally.m.Range(func(k, v any) bool {
		c := v.(*[callOutcomes]atomic.Int64)
		vs := VendorStats{OK: c[callOK].Load(), Throttled: c[callThrottled].Load(), ServerError: c[callServerError].Load(),
			Network: c[callNetwork].Load(), Permanent: c[callPermanent].Load()}
		vs.Retryable = vs.Throttled + vs.ServerError + vs.Network
		out.Vendors[k.(string)] = vs
		return true
	})
	r.lanesMu.Lock()
	lanes := make([]*lane, 0, len(r.vendors))
	for _, ln := range r.vendors {
		lanes = append(lanes, ln)
	}
	r.lanesMu.Unlock()
	sort.Slice(lanes, func(i, j int) bool { return lanes[i].name < lanes[j].name })
	for _, ln := range lanes {
		waiting, running := r.sched.load(ln)
		v := edr.Vendor(ln.name)
		s := out.Vendors[v]
		s.Waiting += waiting
		s.Running += running
		out.Vendors[v] = s
	}
	return out
}

// statsJSON is Stats as the renewal carries it.
func (r *Runner) statsJSON() []byte {
	b, _ := json.Marshal(r.Stats())
	return b
}
