package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/state"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// world is one test's fleet surroundings: an in-process Kafka cluster with
// the job and DLQ topics, a fresh Redis namespace, ledger stores to seed it
// with, and the environment fleetctl runs with.
type world struct {
	t       *testing.T
	kafka   *kfake.Cluster
	brokers []string
	kopts   []kgo.Opt // SASL, when the cluster wants it
	prod    *kgo.Client
	adm     *kadm.Client
	rdb     redis.UniversalClient
	ns      string
	// store leases for 30s; long for 10 minutes. fleetctl runs with
	// LEASE_TTL=3m, so "expiring" means within one minute: store's
	// leases are expiring, long's are not.
	store *state.Store
	long  *state.Store
	env   map[string]string

	mu       sync.Mutex
	sessions map[sessionKey]state.Session
}

type sessionKey struct {
	s      *state.Store
	worker string
}

// sess returns worker's session on s (its lifetime is s's LeaseTTL),
// opening it the first time.
func (w *world) sess(s *state.Store, worker string) state.Session {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if se, ok := w.sessions[sessionKey{s, worker}]; ok {
		return se
	}
	se, _, err := s.OpenSession(ctx(w.t), worker)
	require.NoError(w.t, err)
	if w.sessions == nil {
		w.sessions = map[sessionKey]state.Session{}
	}
	w.sessions[sessionKey{s, worker}] = se
	return se
}

type worldOpts struct {
	sasl *plain.Auth // the cluster requires SASL/PLAIN with this superuser
	// redisCluster puts the ledger on the test binary's Redis Cluster
	// (REDIS_CLUSTER_ADDRS) instead of its redis-server (REDIS_URL).
	redisCluster bool
}

func newWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	kopts := []kfake.Opt{kfake.SeedTopics(4, testutil.TopicOSL, testutil.TopicSVG), kfake.SeedTopics(2, testutil.TopicDLQ)}
	var clientOpts []kgo.Opt
	if o.sasl != nil {
		kopts = append(kopts, kfake.EnableSASL(), kfake.Superuser("PLAIN", o.sasl.User, o.sasl.Pass))
		clientOpts = append(clientOpts, kgo.SASL(o.sasl.AsMechanism()))
	}
	kc := testutil.Kafka(t, kopts...)
	w := &world{t: t, kafka: kc, brokers: kc.ListenAddrs(), kopts: clientOpts}
	w.prod = testutil.Client(t, append([]kgo.Opt{kgo.SeedBrokers(w.brokers...), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, clientOpts...)...)
	w.adm = kadm.NewClient(w.prod)

	redisEnv := map[string]string{"REDIS_URL": testenv.Redis(t).URL()}
	if o.redisCluster {
		w.rdb, w.ns = testenv.RedisClusterClient(t)
		redisEnv = map[string]string{"REDIS_CLUSTER_ADDRS": strings.Join(testenv.RedisCluster(t).Addrs, ",")}
	} else {
		w.rdb, w.ns = testenv.RedisClient(t)
	}
	var err error
	w.store, err = state.New(w.rdb, state.Config{Namespace: w.ns, LeaseTTL: 30 * time.Second})
	require.NoError(t, err)
	w.long, err = state.New(w.rdb, state.Config{Namespace: w.ns, LeaseTTL: 10 * time.Minute})
	require.NoError(t, err)
	require.NoError(t, w.store.Load(ctx(t)))
	w.env = map[string]string{
		"KAFKA_BROKERS":   strings.Join(w.brokers, ","),
		"REDIS_NAMESPACE": w.ns,
		"LEASE_TTL":       "3m",
	}
	maps.Copy(w.env, redisEnv)
	return w
}

func ctx(t *testing.T) context.Context { return testutil.Context(t, 30*time.Second) }

// result is one fleetctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs fleetctl in-process with the world's environment.
func (w *world) run(stdin string, args ...string) result {
	w.t.Helper()
	return runEnv(w.env, stdin, args...)
}

func runEnv(env map[string]string, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := realMain(args, lookup, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// ok runs fleetctl and requires exit status 0.
func (w *world) ok(args ...string) result {
	w.t.Helper()
	r := w.run("", args...)
	require.Equal(w.t, 0, r.code, "%s", r)
	return r
}

// produce writes records (with their Partition set) and waits for them.
func (w *world) produce(recs ...*kgo.Record) {
	w.t.Helper()
	require.NoError(w.t, w.prod.ProduceSync(ctx(w.t), recs...).FirstErr())
}

// endOffsets sums the end offsets of a topic's partitions.
func (w *world) endOffsets(topic string) int64 {
	w.t.Helper()
	return testutil.EndOffsets(ctx(w.t), w.t, w.adm, topic)
}

// readAll reads every record of topics, from the start to the end offsets.
func (w *world) readAll(topics ...string) []*kgo.Record {
	w.t.Helper()
	return testutil.ReadToEnd(ctx(w.t), w.t, append([]kgo.Opt{kgo.SeedBrokers(w.brokers...)}, w.kopts...), topics...)
}

// jobMsg is a job-creation message as SampleDB posts it.
func jobMsg(id, sha, platform string) []byte {
	return fmt.Appendf(nil, `{"jobID":%q,"submission":{"id":"sub-%s","customer":"acme","sample":{"id":%q}},`+
		`"classification":{"sample":%q,"type":"PE","platform":%q}}`, id, id, sha, sha, platform)
}

func sha(c byte) string { return strings.Repeat(string(c), 64) }

// admit admits one job for worker through s.
func (w *world) admit(s *state.Store, worker, id, platform, source string) state.Lease {
	w.t.Helper()
	res, _, err := s.Admit(ctx(w.t), w.sess(s, worker), []state.AdmitRequest{{ID: id, Msg: jobMsg(id, sha(id[len(id)-1]), platform), Source: source}})
	require.NoError(w.t, err)
	require.Len(w.t, res, 1)
	require.Equal(w.t, state.Admitted, res[0].Outcome)
	return res[0].Lease
}

// checkpoint writes worker-shaped ledger fields: "plan" and "task:<kind>"
// as the runner stores them, for a job worker admitted through s.
func (w *world) checkpoint(s *state.Store, worker string, l state.Lease, kv ...string) {
	w.t.Helper()
	require.NoError(w.t, s.Checkpoint(ctx(w.t), w.sess(s, worker), l, kv...))
}

// The ledger fixture every ledger test starts from.
//
//	job-a  w1  10-minute lease  plan cbc + sophos; cbc done, sophos running  → running
//	job-b  w1  30-second lease  plan cytomic; started                         → running, expiring
//	job-c  w2  10-minute lease  plan cbc; failed; outcome decided             → finishing
//	job-d  w2  released                                                       → claimable
//	job-e  w2  completed: tombstone "success"
type fixture struct {
	a, b, c, d, e state.Lease
}

const (
	planAB   = `[{"kind":"cbc.event_export"},{"kind":"sophos.xdr_query","timeout":"2h0m0s"}]`
	cbcDone  = `{"kind":"cbc.event_export","state":"success","taskId":101,"ref":{"id":"4522"},"started":1767225600000,"ended":1767225660000,"progress":"3 rows","result":{"rows":3},"reported":true}`
	sophosOn = `{"kind":"sophos.xdr_query","taskId":"102","ref":{"runId":"run-77","expiresAt":"2026-01-02T00:00:00Z"},"started":1767225600000,"progress":"query running"}`
	cyStart  = `{"kind":"cytomic.osquery","taskId":201}`
	cbcFail  = `{"kind":"cbc.event_export","state":"failed","taskId":301,"ref":{"id":"99"},"error":"cbc: 403 forbidden: check CBC_API_ID","cancel":"abandoned (no cancel API)"}`
)

func (w *world) seedLedger() fixture {
	w.t.Helper()
	var f fixture
	f.a = w.admit(w.long, "w1", "job-a", "win", "Sample.Analysis.Job.OSL/0@0")
	w.checkpoint(w.long, "w1", f.a, "plan", planAB, "task:cbc.event_export", cbcDone, "task:sophos.xdr_query", sophosOn)
	f.b = w.admit(w.store, "w1", "job-b", "win", "Sample.Analysis.Job.OSL/1@0")
	w.checkpoint(w.store, "w1", f.b, "plan", `[{"kind":"cytomic.osquery"}]`, "task:cytomic.osquery", cyStart)
	f.c = w.admit(w.long, "w2", "job-c", "linux", "Sample.Analysis.Job.SVG/0@3")
	w.checkpoint(w.long, "w2", f.c, "plan", `[{"kind":"cbc.event_export"}]`, "task:cbc.event_export", cbcFail)
	_, err := w.store.Decide(ctx(w.t), w.sess(w.long, "w2"), f.c,
		[]byte(`{"state":"failed","reason":"cbc.event_export: cbc: 403 forbidden","by":"w2","at":1767225700000}`), state.Event{})
	require.NoError(w.t, err)
	f.d = w.admit(w.long, "w2", "job-d", "mac", "Sample.Analysis.Job.SVG/1@4")
	n, err := w.store.Release(ctx(w.t), w.sess(w.long, "w2"), []state.Lease{f.d})
	require.NoError(w.t, err)
	require.Equal(w.t, 1, n)
	f.e = w.admit(w.long, "w2", "job-e", "win", "Sample.Analysis.Job.SVG/2@5")
	require.NoError(w.t, w.store.Complete(ctx(w.t), w.sess(w.long, "w2"), f.e, "success",
		state.Event{Ev: "finished", Worker: "w2", Token: f.e.Token, Detail: "SampleDB has the job as success"},
		[]byte(`{"jobID":"job-e","state":"success","worker":"w2","admitted":0,"finished":0,"token":1,"tasks":[`+
			`{"kind":"cbc.event_export","state":"success","result":{"rows":3,"hosts":["ws-1","ws-2"],"hostsTotal":2,`+
			`"files":[{"host":"ws-1","path":"C:\\x.exe","size":12,"sha256":"`+sha('e')+`","matches":true}],"notes":["2 of 3 devices answered"]}}]}`)))
	return f
}

// dlqLetter builds a dead letter as the consumer writes it. source "" omits
// the source headers; truncatedFrom > 0 adds dlq-truncated.
func dlqLetter(part int32, reason, detail, source string, srcPart int32, srcOff int64, key, value string,
	truncatedFrom int, extra ...kgo.RecordHeader) *kgo.Record {
	at := time.Date(2026, 1, 1, 0, 0, int(srcOff), 0, time.UTC)
	if source != "" && truncatedFrom == 0 {
		// As intake writes them: through the one codec.
		src := &kgo.Record{Topic: source, Partition: srcPart, Offset: srcOff, Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			Key: []byte(key), Value: []byte(value), Headers: extra}
		l := intake.EncodeLetter(src, intake.Letter{Reason: reason, Error: detail, Worker: "w1", At: at}, testutil.TopicDLQ, 1<<20)
		l.Partition = part
		return l
	}
	// Letters intake no longer writes: of the older truncation format, or
	// forged without a source.
	hs := append([]kgo.RecordHeader(nil), extra...)
	if truncatedFrom > 0 {
		hs = append(hs, kgo.RecordHeader{Key: intake.HeaderTruncated, Value: []byte(strconv.Itoa(truncatedFrom))})
	}
	hs = append(hs,
		kgo.RecordHeader{Key: intake.HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: intake.HeaderError, Value: []byte(detail)})
	if source != "" {
		hs = append(hs,
			kgo.RecordHeader{Key: intake.HeaderSourceTopic, Value: []byte(source)},
			kgo.RecordHeader{Key: intake.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(srcPart)))},
			kgo.RecordHeader{Key: intake.HeaderSourceOffset, Value: []byte(strconv.FormatInt(srcOff, 10))})
	}
	hs = append(hs,
		kgo.RecordHeader{Key: intake.HeaderWorker, Value: []byte("w1")},
		kgo.RecordHeader{Key: intake.HeaderTime, Value: []byte(at.Format(time.RFC3339Nano))})
	return &kgo.Record{Topic: testutil.TopicDLQ, Partition: part, Key: []byte(key), Value: []byte(value), Headers: hs}
}

// The DLQ fixture: five letters over two partitions.
//
//	0@0  not_json             from OSL/0@5   key job-nj    traceparent header    replayable
//	0@1  invalid_sample_hash  from SVG/1@7   key job-hash                        replayable
//	1@0  oversized            from OSL/2@9   truncated                           not replayable
//	1@1  invalid_sample_hash  from OSL/3@11  replayed once before                replayable
//	1@2  missing_job_id       no source headers                                  not replayable
const (
	valueNJ    = `not json{`
	valueHash  = `{"jobID":"job-hash","submission":{"sample":{"id":"XYZ"}}}`
	valueHash2 = `{"jobID":"job-hash2","submission":{"sample":{"id":"nothex"}}}`
)

func (w *world) seedDLQ() {
	w.t.Helper()
	w.produce(
		dlqLetter(0, job.ReasonNotJSON, "value is not valid JSON", testutil.TopicOSL, 0, 5, "job-nj", valueNJ, 0,
			kgo.RecordHeader{Key: "traceparent", Value: []byte("00-abc-def-01")}),
		dlqLetter(0, job.ReasonInvalidHash, "sample hash is not 64 hex digits", testutil.TopicSVG, 1, 7, "job-hash", valueHash, 0),
		dlqLetter(1, job.ReasonOversized, "2000000 bytes exceeds MAX_MESSAGE_BYTES (1048576)", testutil.TopicOSL, 2, 9, "job-big",
			strings.Repeat("x", 100), 2000000),
		dlqLetter(1, job.ReasonInvalidHash, "sample hash is not 64 hex digits", testutil.TopicOSL, 3, 11, "job-hash2", valueHash2, 0,
			kgo.RecordHeader{Key: intake.HeaderReplayedFrom, Value: []byte(testutil.TopicDLQ + "/0@42")}),
		dlqLetter(1, job.ReasonMissingJobID, "no jobID", "", 0, 12, "", `{"x":1}`, 0),
	)
}
