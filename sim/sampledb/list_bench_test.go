package sampledb_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
)

// BenchmarkListPageOf100kJobs is one page of 1,000 of the active jobs, the
// abort poller's and the reconciler's request, with 100,000 jobs in the
// simulator: what one page costs the simulator, which serves a whole
// listing (100 pages) every abort interval in `worker bench --jobs 100000`.
func BenchmarkListPageOf100kJobs(b *testing.B) {
	srv := sim.New(sim.Config{Keys: map[string]sim.Role{viewerKey: sim.RoleViewer}})
	b.Cleanup(srv.Close)
	for i := range 100_000 {
		srv.CreateJob(message(fmt.Sprintf("%08d-1234-1234-1234-123456789abc", i)))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i % 100) * 1000
		req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("%s?limit=1000&offset=%d", jobRoot, off), nil)
		req.Header.Set("Argus-API-Key", viewerKey)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code, rec.Body.String())
		}
		b.SetBytes(int64(rec.Body.Len()))
		_, _ = io.Copy(io.Discard, rec.Body)
	}
}
