package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The topics and consumer group a fleet runs with (the defaults of
// `worker run`).
const (
	TopicOSL    = "Sample.Analysis.Job.OSL"
	TopicSVG    = "Sample.Analysis.Job.SVG"
	TopicDLQ    = "Sample.Analysis.Job.DLQ"
	TopicResult = "Sample.Analysis.Result"
	Group       = "sample-analysis-workers"
)

// ReadN reads topics from their start until it holds at least n records.
// The client is made with opts (at least kgo.SeedBrokers); the test fails
// when ctx ends first.
func ReadN(ctx context.Context, t testing.TB, n int64, opts []kgo.Opt, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records of %v", len(out), n, topics)
		out = append(out, fs.Records()...)
	}
	return out
}

// EndOffsets sums the end offsets of the partitions of topics.
func EndOffsets(ctx context.Context, t testing.TB, adm *kadm.Client, topics ...string) int64 {
	t.Helper()
	var n int64
	for _, topic := range topics {
		ends, err := adm.ListEndOffsets(ctx, topic)
		require.NoError(t, err)
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	}
	return n
}

// ReadToEnd reads every record of topics, from their start to their end
// offsets as they are when it is called.
func ReadToEnd(ctx context.Context, t testing.TB, opts []kgo.Opt, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	want := EndOffsets(ctx, t, kadm.NewClient(cl), topics...)
	cl.Close()
	if want == 0 {
		return nil
	}
	return ReadN(ctx, t, want, opts, topics...)
}

// Header returns the value of r's header key (its last one), or "".
func Header(r *kgo.Record, key string) string {
	v := ""
	for _, h := range r.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}
