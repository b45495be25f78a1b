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
		if _, _, err := s.Admit(context.Background(), "w1", reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "jobs/s")
}

// One renewal tick for 1,000 in-flight jobs.
func BenchmarkRenew1000Leases(b *testing.B) {
	s := benchStore(b)
	reqs := make([]state.AdmitRequest, 1000)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: fmt.Sprintf("job-%d", i), Msg: []byte("{}")}
	}
	res, _, err := s.Admit(context.Background(), "w1", reqs)
	if err != nil {
		b.Fatal(err)
	}
	held := make([]state.Lease, len(res))
	for i, r := range res {
		held[i] = r.Lease
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := s.Renew(context.Background(), "w1", held)
		if err != nil || len(r.Lost) != 0 {
			b.Fatal(err, r.Lost)
		}
	}
}

// A fenced checkpoint write.
func BenchmarkCheckpoint(b *testing.B) {
	s := benchStore(b)
	res, _, err := s.Admit(context.Background(), "w1", []state.AdmitRequest{{ID: "job", Msg: []byte("{}")}})
	if err != nil {
		b.Fatal(err)
	}
	cp := `{"kind":"cbc.event_export","taskId":7,"ref":{"id":"4522"},"started":1795437046000}`
	for b.Loop() {
		if err := s.Checkpoint(context.Background(), "w1", res[0].Lease, "task:cbc.event_export", cp); err != nil {
			b.Fatal(err)
		}
	}
}
