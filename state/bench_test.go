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
