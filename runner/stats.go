package runner

import (
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
)

// WorkerStats is what a worker publishes about itself with each session
// renewal (state.WorkerInfo.Stats): per vendor, the driver calls it made
// since it started, by result, and the calls queued and running in its
// lanes now. It costs the renewal one field of a few hundred bytes,
// whatever the number of jobs.
type WorkerStats struct {
	Since   time.Time              `json:"since"`
	Vendors map[string]VendorStats `json:"vendors,omitempty"`
}

// VendorStats is one vendor's share of WorkerStats.
type VendorStats struct {
	OK        int64 `json:"ok"`
	Retryable int64 `json:"retryable"` // 429, 5xx, timeouts: retried
	Permanent int64 `json:"permanent"` // refused for good
	Waiting   int   `json:"waiting"`   // calls queued in this worker's lanes
	Running   int   `json:"running"`   // calls in progress
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

// callTally counts driver calls by vendor and result.
type callTally struct {
	since time.Time
	m     sync.Map // vendor → *[3]atomic.Int64 (ok, retryable, permanent)
}

func (t *callTally) add(vendor, result string) {
	v, ok := t.m.Load(vendor)
	if !ok {
		v, _ = t.m.LoadOrStore(vendor, new([3]atomic.Int64))
	}
	c := v.(*[3]atomic.Int64)
	switch result {
	case "ok":
		c[0].Add(1)
	case "retryable":
		c[1].Add(1)
	default:
		c[2].Add(1)
	}
}

// vendorCall records one driver call for the metrics and the published
// stats.
func (r *Runner) vendorCall(vendor, op string, err error, began time.Time) {
	res := callResult(err)
	r.tally.add(vendor, res)
	r.cfg.Observer.VendorCall(vendor, op, res, time.Since(began))
}

// Stats returns the worker's stats as published with each renewal.
func (r *Runner) Stats() WorkerStats {
	out := WorkerStats{Since: r.tally.since, Vendors: map[string]VendorStats{}}
	r.tally.m.Range(func(k, v any) bool {
		c := v.(*[3]atomic.Int64)
		out.Vendors[k.(string)] = VendorStats{OK: c[0].Load(), Retryable: c[1].Load(), Permanent: c[2].Load()}
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
