package state_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

func benchStore(b *testing.B) *state.Store {
	rdb, ns := testenv.RedisClient(b)
	s, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// Admitting one poll's worth of records is one round trip.
func BenchmarkAdmitBatchOf100(b *testing.B) {
	s := benchStore(b)
	msg := make([]byte, 1500)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		reqs := make([]state.AdmitRequest, 100)
		for i := range reqs {
			reqs[i] = state.AdmitRequest{ID: fmt.Sprintf("job-%d", n), Msg: msg, Source: "bench"}
			n++
		}
		if _, _, err := s.Admit(context.Background(), sess(b, s, "w1"), reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "jobs/s")
}

// One renewal tick for a worker holding 1k, 10k or 100k jobs: the same
// one command, whatever the number.
func BenchmarkRenew(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := benchStore(b)
			se := sess(b, s, "w1")
			for i := 0; i < n; i += 1000 {
				reqs := make([]state.AdmitRequest, 1000)
				for j := range reqs {
					reqs[j] = state.AdmitRequest{ID: fmt.Sprintf("job-%d", i+j), Msg: []byte("{}")}
				}
				if _, _, err := s.Admit(context.Background(), se, reqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				r, err := s.Renew(context.Background(), se, n)
				if err != nil || !r.Alive {
					b.Fatal(err, r)
				}
			}
		})
	}
}

// A fenced checkpoint write.
func BenchmarkCheckpoint(b *testing.B) {
	s := benchStore(b)
	se := sess(b, s, "w1")
	res, _, err := s.Admit(context.Background(), se, []state.AdmitRequest{{ID: "job", Msg: []byte("{}")}})
	if err != nil {
		b.Fatal(err)
	}
	cp := `{"kind":"cbc.event_export","taskId":7,"ref":{"id":"4522"},"started":1795437046000}`
	for b.Loop() {
		if err := s.Checkpoint(context.Background(), se, res[0].Lease, "task:cbc.event_export", cp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListJobsOf100k is one ListJobs over a ledger of 100,000 job
// records with a plan and a task checkpoint each, as the console's jobs
// page and `fleetctl jobs` read it: the time of one scan, and the bytes
// Redis sent for it (redis-bytes/op, from INFO's total_net_output_bytes).
func BenchmarkListJobsOf100k(b *testing.B) {
	rdb, ns := testenv.RedisClient(b)
	s, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		b.Fatal(err)
	}
	se, _, err := s.OpenSession(ctx, "w1")
	if err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	msg := []byte(`{"jobID":"%s","submission":{"customer":"acme","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"metaData":{"sensorIds":["1","2"]}}}`)
	for i := 0; i < n; i += 500 {
		reqs := make([]state.AdmitRequest, 0, 500)
		for k := i; k < i+500; k++ {
			id := fmt.Sprintf("%08d-1234-1234-1234-123456789abc", k)
			reqs = append(reqs, state.AdmitRequest{ID: id, Msg: fmt.Appendf(nil, string(msg), id), Source: "bench"})
		}
		if _, _, err := s.Admit(ctx, se, reqs); err != nil {
			b.Fatal(err)
		}
	}
	out := func() int64 {
		v, err := rdb.InfoMap(ctx, "stats").Result()
		if err != nil {
			b.Fatal(err)
		}
		var x int64
		_, _ = fmt.Sscan(v["Stats"]["total_net_output_bytes"], &x)
		return x
	}
	before := out()
	b.ResetTimer()
	for b.Loop() {
		got := 0
		if err := s.ListJobs(ctx, 0, func(state.JobEntry) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("listed %d of %d", got, n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(out()-before)/float64(b.N), "redis-bytes/op")
}
