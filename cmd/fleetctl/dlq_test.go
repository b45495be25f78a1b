package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
)

// letterRows returns the DLQ positions of a `dlq list` table, in order.
func letterRows(out string) []string {
	var got []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.Contains(f[0], "@") && f[0][0] >= '0' && f[0][0] <= '9' {
			got = append(got, f[0])
		}
	}
	return got
}

func TestDLQListShowsLettersWithoutValues(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()

	out := w.ok("dlq", "list").stdout
	t.Logf("fleetctl dlq list:\n%s", out)
	require.Equal(t, []string{"0@0", "0@1", "1@0", "1@1", "1@2"}, letterRows(out), "by dead-letter time")
	require.Regexp(t, `0@0\s+2026-01-01 00:00:05Z\s+not_json\s+Sample\.Analysis\.Job\.OSL/0@5\s+job-nj\s+9\s+value is not valid JSON\n`, out)
	require.Regexp(t, `1@0\s+\S+ \S+\s+oversized\s+Sample\.Analysis\.Job\.OSL/2@9\s+job-big\s+100 \(truncated from 2000000\)\s+`, out)
	require.Regexp(t, `1@2\s+\S+ \S+\s+missing_job_id\s+-\s+-\s+7\s+no jobID\n`, out)
	require.Contains(t, out, "5 of 5 dead letters in Sample.Analysis.Job.DLQ matched")
	require.Regexp(t, `invalid_sample_hash\s+2\s+2\s+0\n`, out)
	require.Regexp(t, `oversized\s+1\s+0\s+1\n`, out)
	for _, v := range []string{valueNJ, valueHash, valueHash2, "xxxxxxxxxx"} {
		require.NotContains(t, out, v, "values are not printed without --show-values")
	}

	out = w.ok("dlq", "list", "--reason", "invalid_sample_hash").stdout
	require.Equal(t, []string{"0@1", "1@1"}, letterRows(out))
	require.Contains(t, out, "2 of 5 dead letters")
	out = w.ok("dlq", "list", "--reason", "not_json,oversized", "--limit", "1").stdout
	require.Equal(t, []string{"0@0"}, letterRows(out))
	require.Contains(t, out, "2 of 5 dead letters in Sample.Analysis.Job.DLQ matched (read up to the end offsets at start); showing the 1 oldest (--limit 0 for all)")

	out = w.ok("dlq", "list", "--reason", "not_json", "--show-values", "--value-bytes", "4").stdout
	require.Regexp(t, `value is not valid JSON\s+not …\n`, out, "values only on request, cut")
}

func TestDLQListJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()
	var rep dlqListReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "list", "-o", "json").stdout), &rep))
	require.Equal(t, testutil.TopicDLQ, rep.Topic)
	require.Equal(t, 5, rep.Read)
	require.Equal(t, 5, rep.Matched)
	require.Len(t, rep.Letters, 5)
	nj := rep.Letters[0]
	require.Equal(t, "not_json", nj.Reason)
	require.Equal(t, "value is not valid JSON", nj.Error)
	require.Equal(t, testutil.TopicOSL, nj.SourceTopic)
	require.Equal(t, int32(0), *nj.SourcePartition)
	require.Equal(t, int64(5), *nj.SourceOffset)
	require.Equal(t, "w1", nj.Worker)
	require.Equal(t, "job-nj", nj.Key)
	require.Equal(t, len(valueNJ), nj.ValueBytes)
	require.True(t, nj.Replayable)
	require.Nil(t, nj.Value, "no value without --show-values")
	big := rep.Letters[2]
	require.True(t, big.Truncated)
	require.Equal(t, 2000000, big.OriginalBytes)
	require.False(t, big.Replayable)
	require.Equal(t, "truncated when dead-lettered", big.NotReplayable)
	require.Equal(t, testutil.TopicDLQ+"/0@42", rep.Letters[3].ReplayedFrom)
	require.Nil(t, rep.Letters[4].SourcePartition)
	require.Equal(t, "no dlq-source-topic header", rep.Letters[4].NotReplayable)
	require.Equal(t, []reasonCount{
		{Reason: "invalid_sample_hash", Count: 2, Replayable: 2},
		{Reason: "missing_job_id", Count: 1},
		{Reason: "not_json", Count: 1, Replayable: 1},
		{Reason: "oversized", Count: 1, Truncated: 1},
	}, rep.ByReason)

	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "list", "-o", "json", "--show-values", "--reason", "not_json").stdout), &rep))
	require.Equal(t, valueNJ, *rep.Letters[0].Value)
}

func TestDLQListOfAnEmptyOrMissingTopic(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	r := w.ok("dlq", "list")
	require.Contains(t, r.stdout, "0 of 0 dead letters")
	w.env["KAFKA_DLQ_TOPIC"] = "No.Such.Topic"
	r = w.run("", "dlq", "list")
	require.Equal(t, 1, r.code)
	require.Equal(t, "fleetctl: the DLQ topic No.Such.Topic does not exist\n", r.stderr)
}

func TestDLQReplayDryRunProducesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()
	r := w.ok("dlq", "replay", "--dry-run")
	t.Logf("fleetctl dlq replay --dry-run:\n%s", r.stdout)
	require.Contains(t, r.stdout, "dry run: 3 letters would be replayed; nothing produced")
	require.Contains(t, r.stdout, "skipping 1 truncated letter: not replayable")
	require.Contains(t, r.stdout, "skipping 1 letter without a usable dlq-source-topic header")
	require.Contains(t, r.stdout, "to Sample.Analysis.Job.OSL: 2\nto Sample.Analysis.Job.SVG: 1\n")
	require.Contains(t, r.stdout, "dropped by the ledger (admission is idempotent by job ID)")
	require.Equal(t, []string{"0@0", "0@1", "1@1"}, letterRows(r.stdout))
	require.Zero(t, w.endOffsets(testutil.TopicOSL))
	require.Zero(t, w.endOffsets(testutil.TopicSVG))
	require.Equal(t, int64(5), w.endOffsets(testutil.TopicDLQ))

	var rep replayReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "replay", "--dry-run", "-o", "json").stdout), &rep))
	require.Equal(t, 5, rep.Read)
	require.Equal(t, 3, rep.Replayable)
	require.Equal(t, 2, rep.Skipped)
	require.Equal(t, 1, rep.Truncated)
	require.Len(t, rep.WouldReplay, 3)
	require.Zero(t, w.endOffsets(testutil.TopicOSL))

	rep = replayReport{}
	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "replay", "--dry-run", "-o", "json", "--reason", "not_json").stdout), &rep))
	require.True(t, rep.DryRun)
	require.Equal(t, 1, rep.Replayable)
	require.Equal(t, 0, rep.Replayed)
	require.Equal(t, 0, rep.Skipped)
	require.Len(t, rep.WouldReplay, 1)
	require.Equal(t, []topicCount{{Topic: testutil.TopicOSL, Count: 1}}, rep.ByTopic)
	require.Zero(t, w.endOffsets(testutil.TopicOSL))
}

func TestDLQReplayReproducesReplayableLettersToTheirSources(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()
	r := w.ok("dlq", "replay", "--yes")
	t.Logf("fleetctl dlq replay --yes:\n%s", r.stdout)
	require.Contains(t, r.stdout, "replayed 3 dead letters\n")
	require.Contains(t, r.stdout, "skipping 1 truncated letter")

	type got struct {
		topic, key, value string
		headers           map[string]string
	}
	var recs []got
	for _, rec := range w.readAll(testutil.TopicOSL, testutil.TopicSVG) {
		hs := map[string]string{}
		for _, h := range rec.Headers {
			_, dup := hs[h.Key]
			require.False(t, dup, "header %s twice", h.Key)
			hs[h.Key] = string(h.Value)
		}
		recs = append(recs, got{rec.Topic, string(rec.Key), string(rec.Value), hs})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].key < recs[j].key })
	require.Equal(t, []got{
		{testutil.TopicSVG, "job-hash", valueHash, map[string]string{intake.HeaderReplayedFrom: testutil.TopicDLQ + "/0@1"}},
		{testutil.TopicOSL, "job-hash2", valueHash2, map[string]string{intake.HeaderReplayedFrom: testutil.TopicDLQ + "/1@1"}},
		{testutil.TopicOSL, "job-nj", valueNJ, map[string]string{"traceparent": "00-abc-def-01", intake.HeaderReplayedFrom: testutil.TopicDLQ + "/0@0"}},
	}, recs, "original key, value and non-dlq headers; the old replayed-from header replaced")
	require.Equal(t, int64(5), w.endOffsets(testutil.TopicDLQ), "the DLQ is read, not changed")

	// By reason, as JSON.
	var rep replayReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "replay", "--yes", "--reason", "not_json", "-o", "json").stdout), &rep))
	require.Equal(t, 1, rep.Replayed)
	require.Equal(t, 1, rep.Matched)
	require.Equal(t, int64(3), w.endOffsets(testutil.TopicOSL))
	require.Equal(t, int64(1), w.endOffsets(testutil.TopicSVG))
}

func TestDLQReplayAsksFirst(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()
	for _, answer := range []string{"no\n", "", "y\n", "YES please\n"} {
		r := w.run(answer, "dlq", "replay")
		require.Equal(t, 1, r.code, "%s", r)
		require.Contains(t, r.stdout, `Replay 3 dead letters to their source topics? Type "yes" to continue: `)
		require.Equal(t, "fleetctl: not confirmed: nothing replayed\n", r.stderr)
	}
	require.Zero(t, w.endOffsets(testutil.TopicOSL))
	require.Zero(t, w.endOffsets(testutil.TopicSVG))

	r := w.run("yes\n", "dlq", "replay", "--reason", "invalid_sample_hash")
	require.Equal(t, 0, r.code, "%s", r)
	require.Contains(t, r.stdout, "replayed 2 dead letters")
	require.Equal(t, int64(1), w.endOffsets(testutil.TopicOSL))
	require.Equal(t, int64(1), w.endOffsets(testutil.TopicSVG))

	r = w.run("", "dlq", "replay", "-o", "json")
	require.Equal(t, 2, r.code, "json cannot prompt")
	r = w.run("", "dlq", "replay", "--reason", "oversized")
	require.Equal(t, 0, r.code, "%s", r)
	require.Contains(t, r.stdout, "nothing to replay")
}

func TestDLQReplayReadsOnlyUpToTheOffsetsAtStart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedDLQ()
	spans := map[int32]span{0: {Start: 0, End: 1}, 1: {Start: 1, End: 2}} // as if captured when only these existed
	cfg := &config{brokers: w.brokers, kafkaOpts: w.kopts}
	var seen []string
	require.NoError(t, readDLQ(ctx(t), cfg, testutil.TopicDLQ, spans, func(r *kgo.Record) error {
		seen = append(seen, string(r.Key))
		return nil
	}))
	sort.Strings(seen)
	require.Equal(t, []string{"job-hash2", "job-nj"}, seen, "nothing past the captured end offsets, nothing before the start")
}

// TestDLQListSaysWhatWasCut: the consumer cuts a record's key, value or
// headers to make its dead letter fit and says so in dlq-truncated (the
// parts) and dlq-original-sizes; fleetctl shows it and does not replay the
// letter.
func TestDLQListSaysWhatWasCut(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	// Cut by intake's own encoder: a 1.2 MB key and headers, and a 2 MB
	// value.
	bigKey, bigHeader := strings.Repeat("k", 1200000), strings.Repeat("h", 600000)
	src := &kgo.Record{Topic: testutil.TopicOSL, Partition: 0, Offset: 1, Key: []byte(bigKey), Value: []byte("not json"),
		Headers: []kgo.RecordHeader{{Key: "a", Value: []byte(bigHeader)}, {Key: "b", Value: []byte(bigHeader)}, {Key: "c", Value: []byte("123456789012345678901234567890")}}}
	cutKey := intake.EncodeLetter(src, intake.Letter{Reason: job.ReasonNotJSON, Error: "value is not valid JSON", Worker: "w1",
		At: time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)}, testutil.TopicDLQ, 1000012)
	src = &kgo.Record{Topic: testutil.TopicOSL, Partition: 0, Offset: 2, Key: []byte("k"), Value: []byte(strings.Repeat("v", 2000000))}
	cutValue := intake.EncodeLetter(src, intake.Letter{Reason: job.ReasonOversized, Error: "too big", Worker: "w1",
		At: time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)}, testutil.TopicDLQ, 1000012)
	w.produce(cutKey, cutValue)
	out := w.ok("dlq", "list").stdout
	t.Logf("fleetctl dlq list:\n%s", out)
	require.Regexp(t, `0@0\s+.*not_json\s+.*kkkk\S*\s+8 \(key, headers cut\)\s+value is not valid JSON\n`, out)
	require.Regexp(t, `0@1\s+.*oversized\s+.*\s+65536 \(truncated from 2000000\)\s+too big\n`, out)

	var rep dlqListReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "list", "-o", "json").stdout), &rep))
	require.Len(t, rep.Letters, 2)
	d := rep.Letters[0]
	require.True(t, d.Truncated)
	require.Equal(t, []string{"key", "headers"}, d.TruncatedParts)
	require.Equal(t, 1200000, d.OriginalKeyBytes)
	require.Equal(t, 8, d.OriginalBytes)
	require.Equal(t, 3, d.OriginalHeaders)
	require.Equal(t, 1200033, d.OriginalHeaderBytes)
	require.False(t, d.Replayable)
	require.Equal(t, "truncated when dead-lettered (key, headers cut)", d.NotReplayable)
	require.Equal(t, 2000000, rep.Letters[1].OriginalBytes)
	require.Equal(t, "truncated when dead-lettered", rep.Letters[1].NotReplayable)

	r := w.ok("dlq", "replay", "--yes")
	require.Contains(t, r.stdout, "skipping 2 truncated letters: not replayable")
	require.Contains(t, r.stdout, "nothing to replay")
	require.Zero(t, w.endOffsets(testutil.TopicOSL))
}

// TestDLQReplayOnlyIntoJobTopics: a letter's dlq-source-topic is only a
// header, and anyone who can write to the DLQ can forge one: replay puts
// letters back only into the configured job topics (KAFKA_TOPICS, or
// KAFKA_TOPIC_REGEX without the DLQ and result topics) and refuses, and
// reports, any other (issue 10: a forged letter put {"state":"success"}
// into Sample.Analysis.Result).
func TestDLQReplayOnlyIntoJobTopics(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		env   map[string]string
		refer int // letters refused
	}{
		{"KAFKA_TOPICS", nil, 3},
		{"KAFKA_TOPIC_REGEX", map[string]string{"KAFKA_TOPIC_REGEX": `^Sample\.Analysis\.Job\.(OSL|SVG)$`}, 3},
		{"a regex that also matches the result and DLQ topics", map[string]string{"KAFKA_TOPIC_REGEX": `Sample\.Analysis\.`}, 3},
		{"KAFKA_TOPICS naming one topic", map[string]string{"KAFKA_TOPICS": testutil.TopicSVG}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOpts{})
			_, err := w.adm.CreateTopic(ctx(t), 1, 1, nil, testutil.TopicResult)
			require.NoError(t, err)
			for k, v := range c.env {
				w.env[k] = v
			}
			w.produce(
				dlqLetter(0, job.ReasonNotJSON, "forged", testutil.TopicResult, 0, 1, "job-x", `{"state":"success"}`, 0),
				dlqLetter(0, job.ReasonNotJSON, "forged", "Some.Other.Topic", 0, 2, "job-y", `{}`, 0),
				dlqLetter(0, job.ReasonNotJSON, "forged", "Sample.Analysis.Job.OSL\n", 0, 3, "job-z", `{}`, 0),
				dlqLetter(1, job.ReasonNotJSON, "value is not valid JSON", testutil.TopicOSL, 0, 4, "job-o", valueNJ, 0),
				dlqLetter(1, job.ReasonInvalidHash, "bad hash", testutil.TopicSVG, 0, 5, "job-s", valueHash, 0),
			)

			dry := w.ok("dlq", "replay", "--dry-run")
			t.Logf("fleetctl dlq replay --dry-run:\n%s", dry.stdout)
			require.Contains(t, dry.stdout, fmt.Sprintf("refusing %s whose source topic is not a job topic", plural(int64(c.refer), "letter", "letters")))
			require.Contains(t, dry.stdout, fmt.Sprintf("dry run: %s would be replayed", plural(int64(5-c.refer), "letter", "letters")))
			require.Contains(t, dry.stdout, `"Sample.Analysis.Result": 1`)
			require.NotContains(t, dry.stdout, "to "+testutil.TopicResult)
			var rep replayReport
			require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "replay", "--dry-run", "-o", "json").stdout), &rep))
			require.Equal(t, c.refer, rep.RefusedTopic)
			require.Equal(t, 5-c.refer, rep.Replayable)
			require.Equal(t, c.refer, rep.Skipped)

			var list dlqListReport
			require.NoError(t, json.Unmarshal([]byte(w.ok("dlq", "list", "-o", "json").stdout), &list))
			require.False(t, list.Letters[0].Replayable)
			require.Equal(t, `its source topic "Sample.Analysis.Result" is not a job topic`, list.Letters[0].NotReplayable)

			r := w.ok("dlq", "replay", "--yes")
			require.Contains(t, r.stdout, fmt.Sprintf("replayed %s", plural(int64(5-c.refer), "dead letter", "dead letters")))
			require.Zero(t, w.endOffsets(testutil.TopicResult), "nothing replayed into the result topic")
			var to []string
			for _, rec := range w.readAll(testutil.TopicOSL, testutil.TopicSVG) {
				to = append(to, rec.Topic+" "+string(rec.Key))
			}
			want := []string{testutil.TopicSVG + " job-s"}
			if c.refer == 3 {
				want = append(want, testutil.TopicOSL+" job-o")
			}
			require.ElementsMatch(t, want, to)
		})
	}
}
