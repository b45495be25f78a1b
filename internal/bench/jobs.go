package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// newJob returns a Windows submission whose classification type selects
// its group's tasks in the bench playbook. The sample is fresh, so the
// vendors find nothing: the cost measured is waiting, not results.
func newJob(rng *rand.Rand, typ string) job.Message {
	return benchAnalyst.Message(loadgen.Sample{SHA256: loadgen.RandomSHA256(rng), Name: "sample.exe", Type: typ, Platform: "win"},
		simstack.CustomerA, map[string]any{"source": "bench"})
}

// benchAnalyst submits the bench's jobs.
var benchAnalyst = loadgen.Submitter{User: job.User{ID: 42, ShortName: "bench", Name: "Bench Analyst"}, Agent: "bench"}

// submit registers n jobs with SampleDB and produces them, in batches, as
// SampleDB does. It returns the job IDs in submission order and when the
// first record was produced.
func (b *run) submit(ctx context.Context, prod *kgo.Client) ([]string, time.Time, error) {
	const batch = 1000
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x9e3779b97f4a7c15))
	topics := intake.DefaultTopics
	ids := make([]string, 0, b.cfg.Jobs)
	var first time.Time
	recs := make([]*kgo.Record, 0, batch)
	for i := range b.cfg.Jobs {
		msg := newJob(rng, groupType(b.cfg.Mix.group(i)))
		b.stack.SampleDB.CreateJob(msg)
		v, err := json.Marshal(msg)
		if err != nil {
			return nil, first, err
		}
		recs = append(recs, &kgo.Record{Topic: topics[i%len(topics)], Key: []byte(msg.JobID), Value: v})
		ids = append(ids, msg.JobID)
		if len(recs) == batch || i == b.cfg.Jobs-1 {
			if first.IsZero() {
				first = time.Now()
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := prod.ProduceSync(pctx, recs...).FirstErr()
			cancel()
			if err != nil {
				return nil, first, fmt.Errorf("bench: produce: %w", err)
			}
			recs = recs[:0]
		}
	}
	return ids, first, nil
}
