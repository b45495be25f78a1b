package sampledb_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
)

// BenchmarkListingOf100kActiveJobs is one listing of 100,000 active jobs
// (100 pages of 1,000) through the client, against the simulator: the abort
// poller's work per interval at N = 100k, whole (every job's submission
// decoded) and brief (ListOptions.Brief, what the abort poller and the
// reconciler ask for). The simulator's share is in its own benchmark.
func BenchmarkListingOf100kActiveJobs(b *testing.B) {
	srv := sim.New(sim.Config{Keys: map[string]sim.Role{"k": sim.RoleViewer}})
	b.Cleanup(srv.Close)
	for i := range 100_000 {
		srv.CreateJob(job.Message{JobID: fmt.Sprintf("%08d-1234-1234-1234-123456789abc", i),
			Submission: job.Submission{Customer: "acme", Sample: job.Sample{ID: "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"}}})
	}
	hs := httptest.NewServer(srv)
	b.Cleanup(hs.Close)
	c, err := sampledb.New(sampledb.Config{URL: hs.URL, APIKey: "k"})
	if err != nil {
		b.Fatal(err)
	}
	for _, brief := range []bool{false, true} {
		b.Run(map[bool]string{false: "whole", true: "brief"}[brief], func(b *testing.B) {
			for b.Loop() {
				n := 0
				err := c.ListJobs(context.Background(), sampledb.ListOptions{PageSize: 1000, Brief: brief}, func(p []sampledb.Job) error { n += len(p); return nil })
				if err != nil || n != 100_000 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
