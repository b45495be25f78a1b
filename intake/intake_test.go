package intake

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/state"
)

// The tests in this file run intake for real: a Kafka-protocol broker
// (kfake), a private redis-server with a fresh namespace, and a runner
// that records what it is handed.

const (
	topicOSL = "Sample.Analysis.Job.OSL"
	topicSVG = "Sample.Analysis.Job.SVG"
	topicDLQ = "Sample.Analysis.Job.DLQ"
)

// fakeRunner has room for everything and records every launch.
type fakeRunner struct {
	sess     state.Session
	mu       sync.Mutex
	free     int
	launched []*state.Record
}

func (r *fakeRunner) TryAcquire(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, r.free)
	r.free -= n
	return n
}

func (r *fakeRunner) Unacquire(n int) {
	r.mu.Lock()
	r.free += n
	r.mu.Unlock()
}

func (r *fakeRunner) Free() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.free
}

func (r *fakeRunner) Room() <-chan struct{} { return nil }

func (r *fakeRunner) Session() state.Session { return r.sess }

// Launch is idempotent by lease, as the runner's.
func (r *fakeRunner) Launch(_ state.Session, l state.Lease, rec *state.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, got := range r.launched {
		if got.ID == l.ID && got.Token == l.Token {
			r.free++ // the slot reserved for it goes back
			return
		}
	}
	r.launched = append(r.launched, rec)
}

func (r *fakeRunner) records() []*state.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*state.Record(nil), r.launched...)
}

// counts records what intake tells its observer.
type counts struct {
	mu       sync.Mutex
	admitted map[string]int
	dead     map[string]int
}

func (c *counts) Admitted(outcome string, n int) {
	c.mu.Lock()
	c.admitted[outcome] += n
	c.mu.Unlock()
}

func (c *counts) DeadLettered(reason string) {
	c.mu.Lock()
	c.dead[reason]++
	c.mu.Unlock()
}

func (c *counts) Paused(bool) {}

func (c *counts) snapshot() (admitted, dead map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	admitted, dead = map[string]int{}, map[string]int{}
	for k, v := range c.admitted {
		admitted[k] = v
	}
	for k, v := range c.dead {
		dead[k] = v
	}
	return admitted, dead
}

// intake is one test's world.
type intake struct {
	t      *testing.T
	prod   *kgo.Client // the test's own client: produces, reads, inspects
	adm    *kadm.Client
	group  string
	runner *fakeRunner
	obs    *counts
	c      *Consumer
}

type intakeOpts struct {
	// dlqMaxMessageBytes is the DLQ topic's max.message.bytes (0: the
	// broker default, 1048588).
	dlqMaxMessageBytes int
}

func newIntake(t *testing.T, o intakeOpts) *intake {
	t.Helper()
	kc := testutil.Kafka(t, kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
	prod := testutil.Client(t, kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(4<<20), kgo.FetchMaxWait(100*time.Millisecond))
	adm := kadm.NewClient(prod)
	ctx := testCtx(t)
	// The job topics accept records far over MAX_MESSAGE_BYTES (a topic
	// configured with a larger max.message.bytes): a poison record gets in.
	big := "4194304"
	_, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &big}, topicOSL)
	require.NoError(t, err)
	_, err = adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &big}, topicSVG)
	require.NoError(t, err)
	var dlqCfg map[string]*string
	if o.dlqMaxMessageBytes > 0 {
		v := strconv.Itoa(o.dlqMaxMessageBytes)
		dlqCfg = map[string]*string{"max.message.bytes": &v}
	}
	_, err = adm.CreateTopic(ctx, 1, 1, dlqCfg, topicDLQ)
	require.NoError(t, err)

	rdb, ns := testenv.RedisClient(t)
	store, err := state.New(rdb, state.Config{Namespace: ns})
	require.NoError(t, err)
	require.NoError(t, store.Load(ctx))
	sess, _, err := store.OpenSession(ctx, "w1")
	require.NoError(t, err)

	in := &intake{t: t, prod: prod, adm: adm, group: "g-" + ns, runner: &fakeRunner{sess: sess, free: 1000},
		obs: &counts{admitted: map[string]int{}, dead: map[string]int{}}}
	in.c, err = New(Config{
		Brokers: kc.ListenAddrs(), Topics: []string{topicOSL, topicSVG}, Group: in.group,
		DLQTopic: topicDLQ, WorkerID: "w1", SessionTimeout: 6 * time.Second,
		Store: store, Runner: in.runner, Observer: in.obs,
		Opts: []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond), kgo.HeartbeatInterval(500 * time.Millisecond)},
	})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = in.c.Run(runCtx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		in.c.Close()
	})
	return in
}

func testCtx(t *testing.T) context.Context { return testutil.Context(t, 60*time.Second) }

// produce writes records to the job topics (partition 0) and waits for them.
func (in *intake) produce(recs ...*kgo.Record) {
	in.t.Helper()
	require.NoError(in.t, in.prod.ProduceSync(testCtx(in.t), recs...).FirstErr())
}

// waitCommitted waits until the group committed every record produced to
// topic (its end offset): everything up to there was admitted or
// dead-lettered.
func (in *intake) waitCommitted(topic string) {
	in.t.Helper()
	ends, err := in.adm.ListEndOffsets(testCtx(in.t), topic)
	require.NoError(in.t, err)
	end, _ := ends.Lookup(topic, 0)
	require.Eventually(in.t, func() bool {
		offs, err := in.adm.FetchOffsets(testCtx(in.t), in.group)
		if err != nil {
			return false
		}
		o, ok := offs.Lookup(topic, 0)
		return ok && o.Err == nil && o.At >= end.Offset
	}, 30*time.Second, 20*time.Millisecond, "intake commits %s up to its end offset %d", topic, end.Offset)
}

// dlq reads the DLQ topic until it holds n records (or the deadline).
func (in *intake) dlq(n int) []*kgo.Record {
	in.t.Helper()
	brokers := in.prod.OptValue(kgo.SeedBrokers).([]string)
	return testutil.ReadN(testutil.Context(in.t, 30*time.Second), in.t, int64(n), []kgo.Opt{kgo.SeedBrokers(brokers...)}, topicDLQ)
}

// jobRecord is a valid job message for id.
func jobRecord(topic, id string) *kgo.Record {
	return &kgo.Record{Topic: topic, Value: []byte(`{"jobID":"` + id + `","submission":{"customer":"acme","sample":{"id":"` +
		docHash + `"}},"classification":{"sample":"` + docHash + `","type":"PE","platform":"win"}}`)}
}
