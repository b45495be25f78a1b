package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// seedKafka writes job records and the group's commits: lag 1 on OSL/0
// (3 records, committed 2), 2 on OSL/1 (never committed: a new group reads
// from the earliest offset), 0 on SVG/2 (committed to the end). Total 3.
func (w *world) seedKafka() {
	w.t.Helper()
	rec := func(topic string, p int32) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: p, Value: []byte(`{}`)}
	}
	w.produce(rec(testutil.TopicOSL, 0), rec(testutil.TopicOSL, 0), rec(testutil.TopicOSL, 0), rec(testutil.TopicOSL, 1), rec(testutil.TopicOSL, 1), rec(testutil.TopicSVG, 2))
	var offs kadm.Offsets
	offs.AddOffset(testutil.TopicOSL, 0, 2, -1)
	offs.AddOffset(testutil.TopicSVG, 2, 1, -1)
	resp, err := w.adm.CommitOffsets(ctx(w.t), testutil.Group, offs)
	require.NoError(w.t, err)
	require.NoError(w.t, resp.Error())
}

// joinGroup starts a group member that commits nothing, and waits until
// the group is stable with it assigned every job partition.
func (w *world) joinGroup(clientID string) {
	w.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.brokers...), kgo.ClientID(clientID),
		kgo.ConsumerGroup(testutil.Group), kgo.ConsumeTopics(testutil.TopicOSL, testutil.TopicSVG), kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(100 * time.Millisecond)}, w.kopts...)...)
	require.NoError(w.t, err)
	w.t.Cleanup(cl.Close)
	require.Eventually(w.t, func() bool {
		gs, err := w.adm.DescribeGroups(ctx(w.t), testutil.Group)
		if err != nil {
			return false
		}
		g := gs[testutil.Group]
		return g.State == "Stable" && len(g.Members) == 1 && len(g.AssignedPartitions()[testutil.TopicOSL]) == 4 &&
			len(g.AssignedPartitions()[testutil.TopicSVG]) == 4
	}, 20*time.Second, 20*time.Millisecond)
}

// seedStatus is the whole status fixture: ledger, workers, cool-down,
// Kafka lag, a group member, dead letters.
func (w *world) seedStatus() fixture {
	w.t.Helper()
	f := w.seedLedger()
	// Workers renew their ten-minute sessions: w1 holds job-a, w2 job-c
	// (w1's 30-second session, holding job-b, is not renewed).
	_, err := w.long.Renew(ctx(w.t), w.sess(w.long, "w1"), 1)
	require.NoError(w.t, err)
	_, err = w.long.Renew(ctx(w.t), w.sess(w.long, "w2"), 1)
	require.NoError(w.t, err)
	w.store.RateLimiter("sophos:abc123", 1, 1, nil).Throttled(ctx(w.t), 2*time.Minute)
	w.seedKafka()
	w.seedDLQ()
	w.joinGroup("analysisfleet-w1")
	return f
}

func TestStatusTable(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedStatus()
	out := w.ok("status").stdout
	t.Logf("fleetctl status:\n%s", out)

	require.Contains(t, out, "namespace     "+w.ns+"\n")
	require.Contains(t, out, "group         sample-analysis-workers: Stable, 1 member")
	require.Regexp(t, `analysisfleet-w1\s+\S+\s+Sample\.Analysis\.Job\.OSL\[0-3\] Sample\.Analysis\.Job\.SVG\[0-3\]`, out)
	require.Regexp(t, `Sample\.Analysis\.Job\.OSL\s+4\s+3\n`, out)
	require.Regexp(t, `Sample\.Analysis\.Job\.SVG\s+4\s+0\n`, out)
	require.Regexp(t, `total\s+8\s+3\n`, out)
	require.Regexp(t, `w1\s+\S+ ago\s+1\n`, out)
	require.Regexp(t, `w2\s+\S+ ago\s+1\n`, out)
	require.Contains(t, out, "3 held by 3 sessions; 1 claimable; 1 in sessions expiring within 1m0s (LEASE_TTL/3)")
	require.Regexp(t, `w1\.[0-9a-f]+\s+w1\s+1\s+in (2\d(\.\d)?s|30s)\n`, out, "w1's short session, earliest deadline first")
	require.Regexp(t, `w2\.[0-9a-f]+\s+w2\s+1\s+in (9m\d\ds|10m0s)\n`, out)
	require.Regexp(t, `job-d\s+-\s+\d+\s+released\s+claimable\n`, out)
	require.NotContains(t, out, "job-a", "held jobs are counted, not listed")
	require.Contains(t, out, "1 decided job waiting for SampleDB")
	require.Contains(t, out, "5 records in Sample.Analysis.Job.DLQ (every record the topic retains, replayed or not)")
	require.Regexp(t, `sophos:abc123\s+sophos\s+(2m0s|1m5\ds)\n`, out)
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedStatus()
	r := w.ok("status", "-o", "json")
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	// The field names are the scripts' contract.
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &raw))
	for _, k := range []string{"namespace", "redis", "group", "lag", "workers", "leases", "outbox", "deadLetters", "coolDowns"} {
		require.Contains(t, raw, k)
	}

	require.Equal(t, w.ns, rep.Namespace)
	require.Equal(t, testutil.Group, rep.Group.Name)
	require.Equal(t, "Stable", rep.Group.State)
	require.Len(t, rep.Group.Members, 1)
	m := rep.Group.Members[0]
	require.Equal(t, "analysisfleet-w1", m.ClientID)
	require.NotEmpty(t, m.MemberID)
	require.Equal(t, []topicPartitions{{testutil.TopicOSL, []int32{0, 1, 2, 3}}, {testutil.TopicSVG, []int32{0, 1, 2, 3}}}, m.Assigned)

	require.Equal(t, int64(3), rep.Lag.Total)
	require.Len(t, rep.Lag.Topics, 2)
	osl := rep.Lag.Topics[0]
	require.Equal(t, testutil.TopicOSL, osl.Topic)
	require.Equal(t, int64(3), osl.Lag)
	require.Equal(t, partitionLag{Partition: 0, Committed: 2, Start: 0, End: 3, Lag: 1}, osl.Partitions[0])
	require.Equal(t, partitionLag{Partition: 1, Committed: -1, Start: 0, End: 2, Lag: 2}, osl.Partitions[1])
	require.Equal(t, int64(0), rep.Lag.Topics[1].Lag)
	require.Equal(t, partitionLag{Partition: 2, Committed: 1, Start: 0, End: 1, Lag: 0}, rep.Lag.Topics[1].Partitions[2])

	require.Len(t, rep.Workers, 2)
	require.Equal(t, "w1", rep.Workers[0].ID)
	require.Equal(t, 1, rep.Workers[0].InFlight)
	require.Less(t, rep.Workers[0].AgoMs, int64(time.Minute/time.Millisecond))

	l := rep.Leases
	require.Equal(t, int64(3), l.Held)
	require.Equal(t, int64(1), l.Claimable)
	require.Equal(t, int64(1), l.Expiring)
	require.Equal(t, int64(60000), l.WindowMs)
	require.Len(t, l.Sessions, 3)
	require.Equal(t, sessionReport{ID: w.sess(w.store, "w1").ID, Worker: "w1", Deadline: l.Sessions[0].Deadline, Jobs: 1},
		l.Sessions[0], "earliest deadline first")
	require.Len(t, l.Due, 1)
	require.Equal(t, dueReport{ID: "job-d", Owner: "", Token: f.d.Token, Deadline: l.Due[0].Deadline, Expired: true}, l.Due[0])
	require.Equal(t, int64(0), time.Time(l.Due[0].Deadline).UnixMilli())

	require.Equal(t, int64(1), *rep.Outbox)
	require.Equal(t, &dlqCount{Topic: testutil.TopicDLQ, Records: 5}, rep.DeadLetters)
	require.Len(t, rep.CoolDowns, 1)
	require.Equal(t, "sophos:abc123", rep.CoolDowns[0].Name)
	require.Equal(t, "sophos", rep.CoolDowns[0].Vendor)
	require.InDelta(t, 120000, rep.CoolDowns[0].LeftMs, 10000)
	require.Empty(t, rep.Errors)
}

func TestStatusOfAFleetThatNeverRan(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	r := w.ok("status", "-o", "json")
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Empty(t, rep.Group.Members)
	require.Equal(t, int64(0), rep.Lag.Total)
	require.Empty(t, rep.Workers)
	require.Equal(t, int64(0), rep.Leases.Held)
	require.Empty(t, rep.Leases.Sessions)
	require.Equal(t, int64(0), rep.DeadLetters.Records)

	// Records nobody consumed yet are all lag: a new group starts at the
	// earliest offset.
	w.produce(&kgo.Record{Topic: testutil.TopicSVG, Partition: 3, Value: []byte(`{}`)})
	out := w.ok("status").stdout
	require.Regexp(t, `total\s+8\s+1\n`, out)
	require.Contains(t, out, "none alive")
	require.Contains(t, out, "cool-downs    none in force")

	// With a topic regex, the job topics are the matching ones, never the DLQ.
	w.env["KAFKA_TOPIC_REGEX"] = `^Sample\.Analysis\.Job\.`
	rep = statusReport{}
	require.NoError(t, json.Unmarshal([]byte(w.ok("status", "-o", "json").stdout), &rep))
	var topics []string
	for _, tl := range rep.Lag.Topics {
		topics = append(topics, tl.Topic)
	}
	require.Equal(t, []string{testutil.TopicOSL, testutil.TopicSVG}, topics)
	require.Equal(t, int64(1), rep.Lag.Total)
}

func TestStatusReportsWhatItCouldReadWhenKafkaIsDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedLedger()
	w.env["KAFKA_BROKERS"] = "127.0.0.1:1" // nothing listens there
	r := w.run("", "status", "--timeout", "3s")
	require.Equal(t, 1, r.code, "%s", r)
	require.Contains(t, r.stdout, "3 held by 3 sessions; 1 claimable", "the ledger half is still shown")
	require.Contains(t, r.stdout, "group         sample-analysis-workers: unavailable")
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one error line: %q", r.stderr)
	require.Contains(t, r.stderr, "status incomplete: kafka:")
}
