package bench

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func kib(b int64) string { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }

// rateBytes is bytes per second in decimal units, as network rates are
// written.
func rateBytes(b float64) string {
	switch {
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB/s", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kB/s", b/1e3)
	}
	return fmt.Sprintf("%.0f B/s", b)
}

// seconds is a latency; "≥" when it is a lower bound.
func seconds(s float64, atLeast bool) string {
	if atLeast {
		return fmt.Sprintf("≥ %.1f s", s)
	}
	return fmt.Sprintf("%.2f s", s)
}

func count(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.2f", f)
}

// vendorNames are the simulators' display names.
var vendorNames = map[string]string{"cbc": "CB Cloud", "sophos": "Sophos", "cytomic": "Cytomic", "cblr": "CB EDR LR"}

type row struct {
	label string
	cell  func(r *Result) string
}

// WriteTable writes results side by side, one column per run: the table
// the README shows.
func WriteTable(w io.Writer, rs []*Result) {
	win := func(f func(r *Result, p *Phase) string) func(r *Result) string {
		return func(r *Result) string {
			if r.Window == nil {
				return "–"
			}
			return f(r, r.Window)
		}
	}
	waiting := func(f func(p *Phase) string) func(r *Result) string {
		return func(r *Result) string {
			if r.Waiting == nil {
				return "–"
			}
			return f(r.Waiting)
		}
	}
	rows := []row{
		{"jobs in flight", func(r *Result) string {
			s := fmt.Sprintf("%d of %d", r.InFlight, r.Jobs)
			if !r.Steady {
				s += " (not steady)"
			}
			return s
		}},
		{"admission", func(r *Result) string {
			if r.AdmissionSeconds == 0 {
				return "–"
			}
			return fmt.Sprintf("%s jobs/s (%.1f s)", count(r.AdmissionRate), r.AdmissionSeconds)
		}},
		{"worker RSS idle → window", func(r *Result) string {
			if r.Window == nil {
				return fmt.Sprintf("%s → %s (last seen)", mib(r.Idle.RSS), mib(r.LastRSS))
			}
			return fmt.Sprintf("%s → %s", mib(r.Idle.RSS), mib(r.Window.RSS))
		}},
		{"jobs the worker holds (its gauge)", win(func(_ *Result, p *Phase) string {
			if p.WorkerInFlight == 0 && p.LeasesHeld == 0 {
				return "–"
			}
			return fmt.Sprintf("%d (leases held %d)", p.WorkerInFlight, p.LeasesHeld)
		})},
		{"leases lost, taken over (before; in window)", win(func(_ *Result, p *Phase) string {
			return fmt.Sprintf("%d, %d; %d, %d", p.LeasesLostBefore, p.LeasesClaimedBefore, p.LeasesLost, p.LeasesClaimed)
		})},
		{"RSS per in-flight job", win(func(r *Result, _ *Phase) string { return kib(r.RSSPerJob) })},
		{"Go heap in use", win(func(_ *Result, p *Phase) string { return mib(p.HeapInuse) })},
		{"goroutines", win(func(_ *Result, p *Phase) string { return fmt.Sprint(p.Goroutines) })},
		{"worker CPU (idle → window)", win(func(r *Result, p *Phase) string {
			return fmt.Sprintf("%.2f → %.2f cores", r.Idle.CPU, p.CPU)
		})},
		{"  excluding the vendor calls (profile)", win(func(_ *Result, p *Phase) string { return cpuSplit(p) })},
		{"Redis commands/s (idle → window)", win(func(r *Result, p *Phase) string {
			return fmt.Sprintf("%s → %s", count(r.Idle.RedisCommands), count(p.RedisCommands))
		})},
		{"  of which script calls/s", win(func(_ *Result, p *Phase) string { return count(p.RedisScripts) })},
		{"  most frequent", win(func(_ *Result, p *Phase) string {
			return strings.Join(topN(p.RedisByCommand, 3, count), ", ")
		})},
		{"Redis traffic (in + out)", win(func(_ *Result, p *Phase) string { return rateBytes(p.RedisBytesIn + p.RedisBytesOut) })},
		{"Redis memory per job", win(func(r *Result, _ *Phase) string { return kib(r.RedisBytesPerJob) })},
		{"SampleDB requests/s", win(func(_ *Result, p *Phase) string { return count(p.SampleDB.Requests) })},
		{"SampleDB bytes/s (out + in)", win(func(_ *Result, p *Phase) string {
			return rateBytes(p.SampleDB.BytesOut + p.SampleDB.BytesIn)
		})},
	}
	vendors := map[string]bool{}
	for _, r := range rs {
		if r.Window != nil {
			for v := range r.Window.Vendors {
				vendors[v] = true
			}
		}
	}
	for _, v := range append(append([]string{}, Vendors...), "cblr") {
		if !vendors[v] {
			continue
		}
		rows = append(rows, row{vendorNames[v] + " requests/s", win(func(_ *Result, p *Phase) string {
			t := p.Vendors[v]
			s := count(t.Requests)
			if t.Errors > 0 {
				s += fmt.Sprintf(" (%s errors/s)", count(t.Errors))
			}
			return s
		})})
	}
	rows = append(rows,
		row{"abort latency p50 / p99", func(r *Result) string {
			a := r.Aborts
			if a == nil {
				return "–"
			}
			s := fmt.Sprintf("%s / %s (%d of %d aborted", seconds(a.P50, a.P50AtLeast), seconds(a.P99, a.P99AtLeast), a.Aborted, a.Requested)
			if a.Pending > 0 {
				s += fmt.Sprintf(", %d not ended", a.Pending)
			}
			return s + ")"
		}},
	)
	rows = append(rows, waitingRows(waiting)...)
	rows = append(rows,
		row{"redis-server CPU", win(func(_ *Result, p *Phase) string { return fmt.Sprintf("%.2f cores", p.RedisCPU) })},
		row{"bench process CPU (simulators)", win(func(_ *Result, p *Phase) string { return fmt.Sprintf("%.2f cores", p.BenchCPU) })},
		row{"machine load (1 min)", win(func(_ *Result, p *Phase) string { return fmt.Sprintf("%.2f", p.LoadAvg) })},
		row{"worker warnings logged", func(r *Result) string {
			n := 0
			for _, c := range r.Warnings {
				n += c
			}
			return fmt.Sprint(n)
		}},
	)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "N")
	for _, r := range rs {
		fmt.Fprintf(tw, "\t%d", r.Jobs)
	}
	fmt.Fprintln(tw)
	for _, rw := range rows {
		fmt.Fprint(tw, rw.label)
		for _, r := range rs {
			fmt.Fprintf(tw, "\t%s", rw.cell(r))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	for _, r := range rs {
		if r.Note != "" {
			fmt.Fprintf(w, "\nN=%d: %s\n", r.Jobs, r.Note)
		}
		if len(r.Warnings) > 0 {
			fmt.Fprintf(w, "\nN=%d: worker warnings: %s\n", r.Jobs, strings.Join(topN(r.Warnings, 5, func(n int) string { return fmt.Sprintf("×%d", n) }), "; "))
		}
	}
}

// cpuSplit is a phase's CPU without the vendor calls, and its parts.
func cpuSplit(p *Phase) string {
	c := p.CPUSplit
	if c == nil {
		return "– (" + cmp.Or(p.CPUSplitError, "no profile") + ")"
	}
	return fmt.Sprintf("%.2f cores (profiled %.2f; vendor calls %.2f: drivers %.2f + HTTP connections %.2f × %.0f%%; rate limiter %.2f, GC %.2f)",
		c.Rest, c.Profiled, c.Vendor, c.Drivers, c.HTTPConns, 100*c.VendorShare, c.Limiter, c.GC)
}

// waitingRows are the rows of the waiting phase (Result.Waiting).
func waitingRows(waiting func(f func(p *Phase) string) func(r *Result) string) []row {
	return []row{
		{"waiting only (no aborts): worker CPU", waiting(func(p *Phase) string { return fmt.Sprintf("%.2f cores", p.CPU) })},
		{"  excluding the vendor calls (profile)", waiting(cpuSplit)},
		{"  Redis commands/s (script calls/s)", waiting(func(p *Phase) string {
			return fmt.Sprintf("%s (%s)", count(p.RedisCommands), count(p.RedisScripts))
		})},
		{"  most frequent", waiting(func(p *Phase) string { return strings.Join(topN(p.RedisByCommand, 4, count), ", ") })},
		{"  SampleDB requests/s, bytes/s", waiting(func(p *Phase) string {
			return fmt.Sprintf("%s, %s", count(p.SampleDB.Requests), rateBytes(p.SampleDB.BytesOut+p.SampleDB.BytesIn))
		})},
		{"  vendor requests/s", waiting(func(p *Phase) string {
			var v float64
			for _, t := range p.Vendors {
				v += t.Requests
			}
			return count(v)
		})},
	}
}
