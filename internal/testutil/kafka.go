package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
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

// Kafka starts a kfake cluster with opts, closed when the test ends.
func Kafka(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	kc, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	return kc
}

// Client returns a Kafka client made with opts, closed when the test ends.
func Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// Consume reads topics from their start, calling f with every record of
// each fetch, until done says so after a fetch. The client is made with
// opts (at least kgo.SeedBrokers); the test fails when ctx ends first.
func Consume(ctx context.Context, t testing.TB, opts []kgo.Opt, f func(r *kgo.Record), done func() bool, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	defer cl.Close()
	for !done() {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "reading %v", topics)
		fs.EachRecord(f)
	}
}

// ReadN reads topics from their start until it holds at least n records
// (every record of the last fetch: more than n when more arrived). The
// client is made with opts (at least kgo.SeedBrokers); the test fails when
// ctx ends first.
func ReadN(ctx context.Context, t testing.TB, n int64, opts []kgo.Opt, topics ...string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	Consume(ctx, t, opts, func(r *kgo.Record) { out = append(out, r) },
		func() bool { return int64(len(out)) >= n }, topics...)
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
