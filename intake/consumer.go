// Package consumer is the fleet's Kafka intake: one consumer group over the
// job topics, decode and validate every record, admit jobs into the Redis
// ledger with a lease, and commit a record's offset only after its job is
// durably admitted (or its bad record durably dead-lettered). A job runs for
// hours, so intake never holds a partition for it: the lease does.
//
//	poll (≤ free slots) ─▶ decode ─┬─ bad ──▶ DLQ topic (reason, source headers;
//	                               │          cut to fit, saying what was cut)
//	                               └─ good ─▶ state.Admit (one round trip per batch)
//	  per partition, in order: commit up to the first record that could not be
//	  handled; rewind the partition to it (SetOffsets) so it is fetched again.
//
// When the runner is full the consumer pauses fetching and resumes when a
// slot frees up; the lag that builds up is what operators and KEDA scale on.
// When Redis is unreachable nothing is admitted and nothing is committed: the
// records are fetched again after a backoff.
package intake

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/state"
)

// Defaults for Config fields left zero.
const (
	DefaultGroup           = "sample-analysis-workers"
	DefaultDLQTopic        = "Sample.Analysis.Job.DLQ"
	DefaultMaxMessageBytes = 1 << 20
	DefaultSessionTimeout  = 45 * time.Second
	// DefaultRebalanceTimeout bounds how long a rebalance waits for members
	// to rejoin. Intake blocks a rebalance only while it admits one poll's
	// records (milliseconds), so it rejoins at once; a short timeout keeps
	// the group from waiting on members that died.
	DefaultRebalanceTimeout = 20 * time.Second
)

// DefaultTopics are SampleDB's two job topics.
var DefaultTopics = []string{"Sample.Analysis.Job.OSL", "Sample.Analysis.Job.SVG"}

// Runner is what intake hands admitted jobs to (*worker.Runner).
type Runner interface {
	TryAcquire(n int) int
	Unacquire(n int)
	Free() int
	Room() <-chan struct{}
	// Session is the worker's session admissions are made under (empty
	// between a lost session and the next).
	Session() state.Session
	// Launch runs a job admitted under sess; a job it runs already under
	// the same lease is left alone (the reserved slot given back).
	Launch(sess state.Session, l state.Lease, rec *state.Record)
}

// Observer is told what intake does, for metrics. Methods must not block.
type Observer interface {
	Admitted(outcome string, n int)
	DeadLettered(reason string)
	Paused(paused bool)
}

type nopObserver struct{}

func (nopObserver) Admitted(string, int) {}
func (nopObserver) DeadLettered(string)  {}
func (nopObserver) Paused(bool)          {}

// Config configures a Consumer.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Topics are the job topics (default DefaultTopics); TopicRegex, when
	// set, is used instead.
	Topics     []string
	TopicRegex string
	// Group is the consumer group. Default DefaultGroup.
	Group string
	// DLQTopic receives bad records; "-" or empty with NoDLQ disables.
	DLQTopic string
	NoDLQ    bool
	// MaxMessageBytes: larger records are dead-lettered. Default 1 MiB.
	MaxMessageBytes int
	// SessionTimeout is the group session timeout. Default 45s.
	SessionTimeout time.Duration
	// RebalanceTimeout bounds a rebalance. Default DefaultRebalanceTimeout.
	RebalanceTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats (and so how
	// quickly it notices a rebalance). Default min(3s, SessionTimeout/10).
	HeartbeatInterval time.Duration
	// WorkerID is the Kafka client ID and goes into dead-letter headers.
	WorkerID string
	Store    *state.Store
	Runner   Runner
	// Opts are extra client options (TLS, SASL, logging).
	Opts     []kgo.Opt
	Observer Observer
	Logger   *zap.Logger
}

// Consumer is the intake loop plus the producer for dead letters and
// results. Run runs the loop; Publish may be used concurrently.
type Consumer struct {
	cfg    Config
	cl     *kgo.Client
	log    *zap.Logger
	obs    Observer
	topics []string
	// dlqMaxBytes is the largest dead letter the producer sends.
	dlqMaxBytes int
}

// New returns a Consumer; it connects lazily.
func New(cfg Config) (*Consumer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("consumer: no brokers")
	}
	if cfg.Store == nil || cfg.Runner == nil {
		return nil, errors.New("consumer: Store and Runner are required")
	}
	cfg.Group = cmp.Or(cfg.Group, DefaultGroup)
	if !cfg.NoDLQ {
		cfg.DLQTopic = cmp.Or(cfg.DLQTopic, DefaultDLQTopic)
	}
	cfg.MaxMessageBytes = cmp.Or(cfg.MaxMessageBytes, DefaultMaxMessageBytes)
	cfg.SessionTimeout = cmp.Or(cfg.SessionTimeout, DefaultSessionTimeout)
	cfg.RebalanceTimeout = cmp.Or(cfg.RebalanceTimeout, DefaultRebalanceTimeout)
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, min(3*time.Second, cfg.SessionTimeout/10))
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cmp.Or(cfg.Logger, zap.NewNop()).Named("consumer")
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID("analysisfleet-" + cfg.WorkerID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(cfg.HeartbeatInterval),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxPartitionBytes(int32(max(cfg.MaxMessageBytes*2, 1<<20))),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			log.Info("partitions assigned", zap.Any("partitions", m))
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			log.Info("partitions revoked", zap.Any("partitions", m))
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			log.Warn("partitions lost", zap.Any("partitions", m))
		}),
	}
	topics := cfg.Topics
	if len(topics) == 0 {
		topics = DefaultTopics
	}
	if cfg.TopicRegex != "" {
		if _, err := regexp.Compile(cfg.TopicRegex); err != nil {
			return nil, fmt.Errorf("consumer: topic regex: %w", err)
		}
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics(cfg.TopicRegex))
		topics = nil
	} else {
		opts = append(opts, kgo.ConsumeTopics(topics...))
	}
	opts = append(opts, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	return &Consumer{cfg: cfg, cl: cl, log: log, obs: cfg.Observer, topics: topics,
		dlqMaxBytes: producerRecordLimit(cl, cfg.DLQTopic)}, nil
}

// Client returns the underlying Kafka client.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Ping checks a broker answers.
func (c *Consumer) Ping(ctx context.Context) error { return c.cl.Ping(ctx) }

// Close closes the client (leaving the group if still in it). Call it after
// the runner drained, so in-flight results are still published.
func (c *Consumer) Close() { c.cl.Close() }

// Run consumes until ctx ends, then leaves the group so the partitions move
// to other workers at once. Everything admitted has been committed.
func (c *Consumer) Run(ctx context.Context) error {
	defer func() {
		lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.cl.LeaveGroupContext(lctx); err != nil {
			c.log.Warn("leaving the group failed", zap.Error(err))
		}
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 200*time.Millisecond, 10*time.Second, 0
	paused := false
	for ctx.Err() == nil {
		free := c.cfg.Runner.Free()
		if free == 0 {
			if !paused {
				c.cl.PauseFetchTopics(c.consumedTopics()...)
				paused = true
				c.obs.Paused(true)
				c.log.Info("in-flight limit reached: fetching paused")
			}
			select {
			case <-ctx.Done():
			case <-c.cfg.Runner.Room():
			}
			continue
		}
		if paused {
			c.cl.ResumeFetchTopics(c.consumedTopics()...)
			paused = false
			c.obs.Paused(false)
			c.log.Info("room again: fetching resumed")
		}
		fetches := c.cl.PollRecords(ctx, free)
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			c.cl.AllowRebalance()
			continue
		}
		err := c.handle(ctx, recs)
		c.cl.AllowRebalance()
		if err != nil {
			wait := bo.NextBackOff()
			if ctx.Err() == nil {
				c.log.Warn("intake failed; nothing committed for the failed records, retrying", zap.Error(err), zap.Duration("in", wait))
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		bo.Reset()
	}
	return nil
}

func (c *Consumer) consumedTopics() []string {
	if c.topics != nil {
		return c.topics
	}
	return c.cl.GetConsumeTopics()
}

type tp struct {
	topic string
	part  int32
}

type item struct {
	rec    *kgo.Record
	msg    *job.Message
	value  []byte // the message as the ledger keeps it (canonical jobID)
	bad    *job.BadRecord
	slot   bool  // a runner slot is reserved for it
	failed error // admission or dead-lettering failed
}

// handle processes one poll's records. Per partition, records are handled in
// order; the partition is committed up to the first record that could not
// be handled and rewound to it. It returns an error when something failed
// (the caller backs off).
func (c *Consumer) handle(ctx context.Context, recs []*kgo.Record) error {
	var order []tp
	parts := map[tp][]*item{}
	good := 0
	for _, r := range recs {
		k := tp{r.Topic, r.Partition}
		if _, ok := parts[k]; !ok {
			order = append(order, k)
		}
		it := &item{rec: r}
		msg, value, err := job.DecodeRecord(r.Value, c.cfg.MaxMessageBytes)
		if err != nil {
			it.bad = err.(*job.BadRecord)
		} else {
			it.msg, it.value = msg, value
			good++
		}
		parts[k] = append(parts[k], it)
	}

	// Reserve a slot per good record; a partition whose record gets none
	// stops there and is fetched again later.
	slots := c.cfg.Runner.TryAcquire(good)
	var admit []*item
	var dlq []*item
	cut := map[tp]int{} // index of the first record not handled in this round
	for _, k := range order {
		cut[k] = len(parts[k])
		for i, it := range parts[k] {
			if it.bad != nil {
				dlq = append(dlq, it)
				continue
			}
			if slots == 0 {
				cut[k] = i
				break
			}
			slots--
			it.slot = true
			admit = append(admit, it)
		}
	}
	c.cfg.Runner.Unacquire(slots) // leftovers (only if TryAcquire over-granted, which it does not)

	var firstErr error
	if len(dlq) > 0 {
		if err := c.deadLetter(ctx, dlq); err != nil {
			firstErr = err
		}
	}
	if len(admit) > 0 {
		if err := c.admit(ctx, admit); err != nil && firstErr == nil {
			firstErr = err
		}
	}

	// Commit per partition up to the first failure or cut; rewind there.
	var commit []*kgo.Record
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for _, k := range order {
		items := parts[k]
		stop := cut[k]
		for i := 0; i < stop; i++ {
			if items[i].failed != nil {
				stop = i
				break
			}
		}
		if stop > 0 {
			commit = append(commit, items[stop-1].rec)
		}
		if stop < len(items) {
			r := items[stop].rec
			if rewind[k.topic] == nil {
				rewind[k.topic] = map[int32]kgo.EpochOffset{}
			}
			rewind[k.topic][k.part] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	if len(rewind) > 0 {
		c.cl.SetOffsets(rewind)
	}
	failpoint.Hit(failpoint.AdmittedBeforeCommit)
	if len(commit) > 0 {
		if err := c.cl.CommitRecords(ctx, commit...); err != nil && ctx.Err() == nil {
			// Not fatal: the records are admitted; a redelivery is dropped
			// as a duplicate by the ledger.
			c.log.Warn("offset commit failed", zap.Error(err))
		}
	}
	if firstErr == nil && len(rewind) > 0 {
		// Out of slots: not an error, the runner is full.
		return nil
	}
	return firstErr
}

// errNoSession: the worker is between sessions (it lost one and is opening
// the next); the records are read again shortly.
var errNoSession = errors.New("the worker has no session (opening a new one)")

// MaxAdmitBatch bounds the jobs admitted by one ledger call. A poll can
// return tens of thousands of records when the worker has that much room;
// one script admitting them all would hold Redis for seconds (every other
// call of the fleet waits, renewals included) and outlast its own timeout,
// its answer lost although Redis applied it.
const MaxAdmitBatch = 500

// admit admits items in batches of at most MaxAdmitBatch; a batch that
// fails marks its own items failed, not the others.
func (c *Consumer) admit(ctx context.Context, items []*item) error {
	var firstErr error
	for chunk := range slices.Chunk(items, MaxAdmitBatch) {
		if err := c.admitBatch(ctx, chunk); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (c *Consumer) admitBatch(ctx context.Context, items []*item) error {
	reqs := make([]state.AdmitRequest, len(items))
	for i, it := range items {
		reqs[i] = state.AdmitRequest{
			ID:     it.msg.JobID,
			Msg:    it.value,
			Source: fmt.Sprintf("%s/%d@%d", it.rec.Topic, it.rec.Partition, it.rec.Offset),
		}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sess := c.cfg.Runner.Session()
	var res []state.AdmitResult
	err := errNoSession
	if sess.ID != "" {
		res, _, err = c.cfg.Store.Admit(actx, sess, reqs)
	}
	if err != nil {
		for _, it := range items {
			it.failed = err
		}
		c.cfg.Runner.Unacquire(len(items))
		return fmt.Errorf("admit %d jobs: %w", len(items), err)
	}
	counts := map[state.AdmitOutcome]int{}
	for i, r := range res {
		counts[r.Outcome]++
		switch r.Outcome {
		case state.Admitted, state.TakenOver, state.Held:
			// Held: admitted under this session before, the answer lost;
			// Launch runs it unless it runs already.
			c.cfg.Runner.Launch(sess, r.Lease, r.Record)
		default:
			c.cfg.Runner.Unacquire(1)
			c.log.Debug("duplicate job record dropped", zap.String("job_id", r.ID),
				zap.String("outcome", r.Outcome.String()), zap.String("detail", r.Detail),
				zap.String("source", reqs[i].Source))
		}
	}
	for o, n := range counts {
		c.obs.Admitted(o.String(), n)
	}
	return nil
}

func (c *Consumer) deadLetter(ctx context.Context, items []*item) error {
	if c.cfg.DLQTopic == "" {
		for _, it := range items {
			c.logBad(it, "dead-letter topic disabled: record dropped")
			c.obs.DeadLettered(it.bad.Reason)
		}
		return nil
	}
	recs := make([]*kgo.Record, len(items))
	for i, it := range items {
		recs[i] = c.letterFor(it, false)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	results := c.cl.ProduceSync(pctx, recs...)
	// A letter the broker still finds too large (the DLQ topic's
	// max.message.bytes is below the producer's batch limit) goes again
	// with nothing of the record copied: only why and where from.
	var again []int
	for i, pr := range results {
		if tooLarge(pr.Err) {
			c.log.Warn("dead letter refused as too large; sending it again without the record's key, value and headers",
				zap.String("dlq_topic", c.cfg.DLQTopic), zap.Int("letter_bytes", letterSize(recs[i])), zap.Error(pr.Err))
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		minimal := make([]*kgo.Record, len(again))
		for j, i := range again {
			minimal[j] = c.letterFor(items[i], true)
		}
		for j, pr := range c.cl.ProduceSync(pctx, minimal...) {
			results[again[j]] = pr
		}
	}
	var firstErr error
	for i, pr := range results {
		it := items[i]
		if pr.Err != nil {
			it.failed = pr.Err
			if firstErr == nil {
				firstErr = fmt.Errorf("dead-letter to %s: %w", c.cfg.DLQTopic, pr.Err)
			}
			continue
		}
		c.logBad(it, "record dead-lettered")
		c.obs.DeadLettered(it.bad.Reason)
	}
	return firstErr
}

// tooLarge reports whether a produce failed because the record (or its
// batch) is over a size limit, the producer's or the broker's.
func tooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// letterFor builds the dead letter of a bad record (see EncodeLetter).
func (c *Consumer) letterFor(it *item, minimal bool) *kgo.Record {
	limit := c.dlqMaxBytes
	if minimal {
		limit = 0
	}
	return EncodeLetter(it.rec, Letter{Reason: it.bad.Reason, Error: it.bad.Detail, Worker: c.cfg.WorkerID, At: time.Now()},
		c.cfg.DLQTopic, limit)
}

func (c *Consumer) logBad(it *item, what string) {
	c.log.Warn(what,
		zap.String("reason", it.bad.Reason), zap.String("error", it.bad.Detail),
		zap.String("topic", it.rec.Topic), zap.Int32("partition", it.rec.Partition), zap.Int64("offset", it.rec.Offset))
}

// producerRecordLimit is the largest record batch cl produces to topic
// (franz-go fails a larger record before sending it), capped by the
// client's buffer limit when it has one.
func producerRecordLimit(cl *kgo.Client, topic string) int {
	limit := 1_000_012 // franz-go's default ProducerBatchMaxBytes
	if fn, ok := cl.OptValue(kgo.ProducerBatchMaxBytesFn).(func(string) int32); ok && fn != nil {
		limit = int(fn(topic))
	}
	if mb, ok := cl.OptValue(kgo.MaxBufferedBytes).(int64); ok && mb > 0 {
		limit = min(limit, int(mb))
	}
	return limit
}
