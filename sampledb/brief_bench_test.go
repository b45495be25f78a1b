package sampledb

import (
	"encoding/json"
	"fmt"
	"testing"
)

// BenchmarkDecodeBriefPage is the client's share of one page of the abort
// listing (1,000 active jobs, each with a submission as the simulator
// serves it): the envelope and then the page (two passes), or both in one.
func BenchmarkDecodeBriefPage(b *testing.B) {
	items := make([]map[string]any, 1000)
	for i := range items {
		items[i] = map[string]any{
			"id": fmt.Sprintf("%08d-1234-1234-1234-123456789abc", i), "state": "executing", "abortRequested": false,
			"enqueuedTimestamp": 1764763200000, "startTimestamp": 1764763201000, "endTimestamp": 0,
			"submission": map[string]any{"customer": "acme", "sample": map[string]any{
				"id": "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9", "fileName": "invoice.exe",
				"mimeType": "application/x-dosexec", "size": 123456},
				"createdByUser": map[string]any{"id": 42, "userName": "analyst"}, "priority": "normal",
				"sensors": []string{"WIN-01", "WIN-02"}},
			"classification": map[string]any{"verdict": "unknown"},
		}
	}
	body, err := json.Marshal(map[string]any{"responseCode": 200, "limit": 1000, "offset": 0, "count": 100000, "size": 1000, "data": items})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("page: %d bytes", len(body))
	b.Run("two-passes", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			env, err := decodeEnvelope(body)
			if err != nil {
				b.Fatal(err)
			}
			if pg, err := decodeJobs(env.Data, true); err != nil || len(pg.jobs) != 1000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-pass", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			env, ok := decodeBriefEnvelope(body)
			if !ok || len(env.brief.jobs) != 1000 {
				b.Fatal("not one pass")
			}
		}
	})
}
