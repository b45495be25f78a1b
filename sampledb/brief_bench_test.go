package sampledb

import "testing"

// BenchmarkDecodeBriefPage is the client's share of one page of the abort
// listing (1,000 active jobs, each with a submission as the simulator
// serves it): the envelope and then the page (two passes), or both in one.
func BenchmarkDecodeBriefPage(b *testing.B) {
	body := ordinaryBriefPage(b, 1000)
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
