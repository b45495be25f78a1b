package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
)

// TestDLQReplayIsConfirmedAppliedAndAudited: a replay is offered per
// reason and per letter, shows its dry run on the confirmation page, runs
// only with the POST of that page, refuses a letter whose source is not a
// job topic, and lands in the audit stream naming who.
func TestDLQReplayIsConfirmedAppliedAndAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{write: true, proxyHeader: "X-Auth-Request-User"})
	user := []string{"X-Auth-Request-User", "alice@example.com"}
	_, body := w.get("/dlq", user...)
	require.Contains(t, body, `href="/dlq/replay?reason=bad-json"`)
	require.Contains(t, body, `href="/dlq/replay?letter=0%401"`)
	require.NotContains(t, body, `href="/dlq/replay?letter=0%403"`, "no replay offered for a refused letter")
	require.Contains(t, body, "not replayable: its source topic &#34;Sample.Analysis.Result&#34; is not a job topic")
	require.NotContains(t, body, `href="/dlq/replay?reason=bad-hash"`, "nothing replayable with that reason")

	resp, body := w.get("/dlq/replay?reason=bad-json", user...)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, `<strong id="replay-count">1</strong> (the dry-run count)`)
	require.Contains(t, body, "1 refused (the source topic is not a job topic)")
	require.Contains(t, body, `&#34;Sample.Analysis.Result&#34;: 1`)
	require.Contains(t, body, `<form method="post" action="/dlq/replay" class="confirm">`)
	require.Contains(t, body, `<input type="hidden" name="reason" value="bad-json">`)
	require.Contains(t, body, `<input type="hidden" name="upto" value="0:4">`)
	require.Equal(t, []fakeReplay{{ReplaySelection{Reason: "bad-json"}, true}}, w.kafka.asked, "the confirmation page is a dry run")

	resp, _ = w.post("/dlq/replay", url.Values{"reason": {"bad-json"}}, user...)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "not confirmed")
	require.Zero(t, w.kafka.replayed)

	resp, body = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "reason": {"bad-json"}, "upto": {"0:4"}}, user...)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	require.Equal(t, "/dlq?done=replay&replayed=1&skipped=1&refused=1", resp.Header.Get("Location"))
	require.Equal(t, fakeReplay{ReplaySelection{Reason: "bad-json", UpTo: map[int32]int64{0: 4}}, false}, w.kafka.asked[len(w.kafka.asked)-1],
		"the replay reads no further than the dry run did")
	require.Equal(t, 1, w.kafka.replayed)
	_, body = w.get("/dlq?done=replay&replayed=1&skipped=1&refused=1", user...)
	require.Contains(t, body, "Replayed 1 dead letter(s) to their job topics; skipped 1 (of which 1 refused")

	// One letter: replayable, refused (not a job topic), gone.
	resp, _ = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "letter": {"0@1"}}, user...)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, 2, w.kafka.replayed)
	resp, body = w.get("/dlq/replay?letter=0%403", user...)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `not replayable: its source topic &#34;Sample.Analysis.Result&#34; is not a job topic`)
	require.NotContains(t, body, `<form method="post"`, "nothing to confirm")
	resp, body = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "letter": {"0@3"}}, user...)
	require.Equal(t, http.StatusConflict, resp.StatusCode, body)
	require.Contains(t, body, "is not a job topic")
	require.Equal(t, 2, w.kafka.replayed, "a refused letter is not produced")
	for _, a := range w.kafka.asked {
		if a.sel.Letter != nil && *a.sel.Letter == (kafkaview.Pos{Partition: 0, Offset: 3}) {
			require.True(t, a.dry, "a refused letter is only ever judged")
		}
	}
	resp, _ = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "letter": {"0@9"}}, user...)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "letter": {"x"}}, user...)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	var got []string
	for _, a := range w.audit() {
		require.Equal(t, "alice@example.com", a["who"])
		require.Equal(t, actionReplay, a["action"])
		got = append(got, a["job"].(string)+": "+a["result"].(string))
	}
	require.Equal(t, []string{
		`reason "bad-json": refused: not confirmed`,
		`reason "bad-json": ok: replayed 1 of 2 chosen; skipped 1 (0 truncated, 1 refused: not a job topic)`,
		`letter 0@1: ok: replayed 1 of 1 chosen; skipped 0 (0 truncated, 0 refused: not a job topic)`,
		`letter 0@3: refused: its source topic "Sample.Analysis.Result" is not a job topic`,
		`letter 0@9: refused: no such letter`,
		`(bad choice): refused: letter "x": want partition@offset`,
	}, got)
	_, body = w.get("/", user...)
	require.Contains(t, body, `<td>dlq-replay</td><td>letter 0@9</td>`, "a replay names its letters, not a job")
}

// TestDLQReplayRefusedReadOnlyAndCrossSite: a read-only console shows the
// dry run but offers no replay and answers the POST 403 (audited); a
// cross-site POST never reaches the action.
func TestDLQReplayRefusedReadOnlyAndCrossSite(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	_, body := w.get("/dlq")
	require.NotContains(t, body, `href="/dlq/replay`)
	require.Contains(t, body, "This console is read-only: replay with <code>fleetctl dlq replay</code>")
	resp, body := w.get("/dlq/replay?reason=bad-json")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<strong id="replay-count">1</strong>`)
	require.Contains(t, body, "This console is read-only")
	require.NotContains(t, body, `<form method="post"`)
	resp, body = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "reason": {"bad-json"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	require.Contains(t, body, "read-only")
	require.Zero(t, w.kafka.replayed)
	a := w.audit()
	require.Len(t, a, 1)
	require.Equal(t, "refused: read-only console", a[0]["result"])
	require.Equal(t, actionReplay, a[0]["action"])
	require.Contains(t, a[0]["who"], "local@127.0.0.1")

	rw := newWorld(t, opts{write: true})
	resp, body = rw.post("/dlq/replay", url.Values{"confirm": {"yes"}, "reason": {"bad-json"}}, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	require.Contains(t, body, "cross-origin")
	require.Zero(t, rw.kafka.replayed)
	require.Empty(t, rw.kafka.asked)
	require.Empty(t, rw.audit())

	nk := newWorld(t, opts{write: true, noKafka: true})
	resp, _ = nk.get("/dlq/replay?reason=bad-json")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// TestDLQReplayThroughKafka: the console's replay over a real Kafka
// protocol broker (kfake) with KafkaReader: the confirmed reason's
// replayable letters go back to their job topics with dlq-replayed-from;
// a letter forged into the result topic and a truncated one do not.
func TestDLQReplayThroughKafka(t *testing.T) {
	t.Parallel()
	c := ctx(t)
	kc := testutil.Kafka(t, kfake.NumBrokers(1), kfake.SeedTopics(1, testutil.TopicOSL, testutil.TopicSVG, testutil.TopicDLQ, testutil.TopicResult))
	seed := []kgo.Opt{kgo.SeedBrokers(kc.ListenAddrs()...)}
	letter := func(reason, source, key, value string, limit int) *kgo.Record {
		src := &kgo.Record{Topic: source, Key: []byte(key), Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-abc")}}}
		return intake.EncodeLetter(src, intake.Letter{Reason: reason, Error: "bad", Worker: "w1", At: time.Now()}, testutil.TopicDLQ, limit)
	}
	prod := testutil.Client(t, seed...)
	require.NoError(t, prod.ProduceSync(c,
		letter(job.ReasonNotJSON, testutil.TopicOSL, "job-a", "not json", 1<<20),                   // 0@0: replayable
		letter(job.ReasonNotJSON, testutil.TopicResult, "job-x", `{"state":"success"}`, 1<<20),     // 0@1: forged, refused
		letter(job.ReasonNotJSON, testutil.TopicSVG, "job-big", strings.Repeat("v", 200000), 1000), // 0@2: truncated
		letter(job.ReasonInvalidHash, testutil.TopicSVG, "job-h", `{"jobID":"h"}`, 1<<20),          // 0@3: another reason
	).FirstErr())
	kr, err := NewKafka(KafkaConfig{Brokers: kc.ListenAddrs(), Group: "g", Topics: []string{testutil.TopicOSL, testutil.TopicSVG},
		DLQTopic: testutil.TopicDLQ, ResultTopic: testutil.TopicResult})
	require.NoError(t, err)
	t.Cleanup(kr.Close)
	w := newWorld(t, opts{write: true, kafka: kr})

	_, body := w.get("/dlq")
	require.Contains(t, body, `<strong id="replayable">2</strong>`)
	require.Contains(t, body, "not replayable: its source topic &#34;Sample.Analysis.Result&#34; is not a job topic")
	require.Contains(t, body, "not replayable: truncated when dead-lettered")
	_, body = w.get("/dlq/replay?reason=" + job.ReasonNotJSON)
	require.Contains(t, body, `<strong id="replay-count">1</strong>`)
	require.Contains(t, body, "1 truncated when dead-lettered, 1 refused")
	require.Contains(t, body, `<input type="hidden" name="upto" value="0:4">`)

	// A letter that arrives after the dry run is not replayed with it.
	require.NoError(t, prod.ProduceSync(c, letter(job.ReasonNotJSON, testutil.TopicOSL, "job-late", "late", 1<<20)).FirstErr())
	resp, body := w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "reason": {job.ReasonNotJSON}, "upto": {"0:4"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	require.Equal(t, "/dlq?done=replay&replayed=1&skipped=2&refused=1", resp.Header.Get("Location"))
	resp, body = w.post("/dlq/replay", url.Values{"confirm": {"yes"}, "letter": {"0@1"}})
	require.Equal(t, http.StatusConflict, resp.StatusCode, body)

	adm := kadm.NewClient(prod)
	require.Zero(t, testutil.EndOffsets(c, t, adm, testutil.TopicResult), "nothing replayed into the result topic")
	require.Zero(t, testutil.EndOffsets(c, t, adm, testutil.TopicSVG), "neither the truncated letter nor another reason's")
	recs := testutil.ReadToEnd(c, t, seed, testutil.TopicOSL)
	require.Len(t, recs, 1)
	require.Equal(t, "job-a", string(recs[0].Key))
	require.Equal(t, "not json", string(recs[0].Value))
	require.Equal(t, "00-abc", testutil.Header(recs[0], "traceparent"))
	require.Equal(t, testutil.TopicDLQ+"/0@0", testutil.Header(recs[0], intake.HeaderReplayedFrom))
	require.Empty(t, testutil.Header(recs[0], intake.HeaderReason), "no dlq- header goes back")
}
