package intake

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoDefaultBatchMax is franz-go's default ProducerBatchMaxBytes, the
// largest record batch intake's producer sends.
const kgoDefaultBatchMax = 1_000_012

// wireSize is the most a record can take in a record batch of its own
// (v2 batch header, then the record with every varint at its widest).
func wireSize(r *kgo.Record) int {
	n := 61 + 5 + 1 + 10 + 5 + 5 + len(r.Key) + 5 + len(r.Value) + 5
	for _, h := range r.Headers {
		n += 5 + len(h.Key) + 5 + len(h.Value)
	}
	return n
}

// noise is n bytes that do not compress (the broker measures compressed
// batches) and are not JSON.
func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	b[0] = 0xff
	return b
}

// TestPoisonRecordIsDeadLetteredWhateverItsSize: a bad record too large to
// copy whole into a dead letter (a 1.2 MB key, 1.2 MB of headers, a 2 MB
// value, a DLQ topic with a small max.message.bytes) is still
// dead-lettered, cut to fit and saying so, and its offset committed: it
// never stalls the partition (issue 10: MESSAGE_TOO_LARGE forever, nothing
// committed, every partition backing off).
func TestPoisonRecordIsDeadLetteredWhateverItsSize(t *testing.T) {
	t.Parallel()
	bigKey := bytes.Repeat([]byte("k"), 1_200_000)
	bigHeaders := []kgo.RecordHeader{
		{Key: "traceparent", Value: []byte("00-abc-def-01")},
		{Key: "blob-1", Value: bytes.Repeat([]byte("h"), 600_000)},
		{Key: "blob-2", Value: bytes.Repeat([]byte("h"), 600_000)},
	}
	for _, c := range []struct {
		name       string
		dlqMax     int // DLQ topic max.message.bytes; 0: the broker default
		rec        *kgo.Record
		reason     string
		truncated  string
		sizes      string
		keepsTrace bool // the small traceparent header is still copied
	}{
		{name: "1.2 MB key", rec: &kgo.Record{Key: bigKey, Value: []byte("not json")},
			reason: job.ReasonNotJSON, truncated: "key", sizes: "key=1200000,value=8,headers=0,header-bytes=0"},
		{name: "1.2 MB of headers", rec: &kgo.Record{Key: []byte("k1"), Value: []byte("{}"), Headers: bigHeaders},
			reason: job.ReasonMissingJobID, truncated: "headers", sizes: "key=2,value=2,headers=3,header-bytes=1200036", keepsTrace: true},
		{name: "2 MB value", rec: &kgo.Record{Key: []byte("k1"), Value: bytes.Repeat([]byte("v"), 2_000_000)},
			reason: job.ReasonOversized, truncated: "value", sizes: "key=2,value=2000000,headers=0,header-bytes=0"},
		{name: "everything at once", rec: &kgo.Record{Key: bigKey, Value: bytes.Repeat([]byte("v"), 1_500_000), Headers: bigHeaders},
			reason: job.ReasonOversized, truncated: "key,value,headers", sizes: "key=1200000,value=1500000,headers=3,header-bytes=1200036", keepsTrace: true},
		{name: "small DLQ max.message.bytes", dlqMax: 8 << 10, rec: &kgo.Record{Key: []byte("k1"), Value: noise(50_000)},
			reason: job.ReasonNotJSON, truncated: "key,value", sizes: "key=2,value=50000,headers=0,header-bytes=0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			in := newIntake(t, intakeOpts{dlqMaxMessageBytes: c.dlqMax})
			const goodOSL, goodSVG = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
			c.rec.Topic = topicOSL
			in.produce(c.rec, jobRecord(topicOSL, goodOSL), jobRecord(topicSVG, goodSVG))

			letters := in.dlq(1)
			require.Len(t, letters, 1)
			l := letters[0]
			require.Equal(t, c.reason, testutil.Header(l, HeaderReason))
			require.Equal(t, topicOSL, testutil.Header(l, HeaderSourceTopic))
			require.Equal(t, "0", testutil.Header(l, HeaderSourceOffset))
			require.Equal(t, c.truncated, testutil.Header(l, HeaderTruncated), "the letter says what was cut")
			require.Equal(t, c.sizes, testutil.Header(l, HeaderOriginalSizes), "and how large the original was")
			limit := kgoDefaultBatchMax
			if c.dlqMax > 0 {
				limit = c.dlqMax
			}
			require.LessOrEqual(t, wireSize(l), limit, "the letter fits")
			require.True(t, bytes.HasPrefix(c.rec.Value, l.Value), "a cut value is a prefix of the original")
			require.True(t, bytes.HasPrefix(c.rec.Key, l.Key), "a cut key is a prefix of the original")
			require.Equal(t, c.keepsTrace, testutil.Header(l, "traceparent") == "00-abc-def-01")

			in.waitCommitted(topicOSL)
			in.waitCommitted(topicSVG)
			var ids []string
			for _, r := range in.runner.records() {
				ids = append(ids, r.ID)
			}
			require.ElementsMatch(t, []string{goodOSL, goodSVG}, ids, "the good jobs around the poison record run")
			_, dead := in.obs.snapshot()
			require.Equal(t, map[string]int{c.reason: 1}, dead)
		})
	}
}

// TestLetterCodecRoundTrip: what EncodeLetter writes, DecodeLetter reads;
// dlq- headers a record arrived with (a replayed letter's, or forged) do not
// speak for the new letter, except where it was replayed from.
func TestLetterCodecRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	src := &kgo.Record{Topic: "Sample.Analysis.Job.OSL", Partition: 3, Offset: 42, Timestamp: at.Add(-time.Minute),
		Key: []byte("key"), Value: []byte("not json"),
		Headers: []kgo.RecordHeader{
			{Key: "trace", Value: []byte("abc")},
			{Key: HeaderTruncated, Value: []byte("key,value")}, // forged
			{Key: HeaderReason, Value: []byte("forged")},
			{Key: HeaderReplayedFrom, Value: []byte("Sample.Analysis.Job.DLQ/0@7")},
		}}
	rec := EncodeLetter(src, Letter{Reason: job.ReasonNotJSON, Error: "value is not valid JSON", Worker: "w9", At: at}, "DLQ", 1<<20)
	require.Equal(t, "DLQ", rec.Topic)
	require.Equal(t, src.Value, rec.Value)
	l := DecodeLetter(rec)
	require.Equal(t, job.ReasonNotJSON, l.Reason)
	require.Equal(t, "value is not valid JSON", l.Error)
	require.Equal(t, "Sample.Analysis.Job.OSL", l.SourceTopic)
	require.EqualValues(t, 3, *l.SourcePartition)
	require.EqualValues(t, 42, *l.SourceOffset)
	require.True(t, l.SourceTime.Equal(src.Timestamp))
	require.Equal(t, "w9", l.Worker)
	require.True(t, l.At.Equal(at))
	require.Empty(t, l.Truncated, "a forged dlq-truncated is not copied")
	require.Equal(t, "Sample.Analysis.Job.DLQ/0@7", l.ReplayedFrom)

	back := ReplayRecord(rec, l, "DLQ")
	require.Equal(t, src.Topic, back.Topic)
	require.Equal(t, []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}, {Key: HeaderReplayedFrom, Value: []byte("DLQ/0@0")}}, back.Headers)
}
