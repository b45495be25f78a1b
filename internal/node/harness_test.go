package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/sampledb"
	simcytomic "github.com/analysisfleet/analysisfleet/sim/cytomic"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
	"github.com/analysisfleet/analysisfleet/state"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// partitions is how many partitions each topic of a fleet's broker has.
const partitions = 4

// fleet is one test's world: a Kafka-protocol broker, a Redis namespace,
// the simulators, and the workers started on them.
type fleet struct {
	t       *testing.T
	kafka   *kfake.Cluster
	brokers []string
	prod    *kgo.Client
	stack   *simstack.Stack
	ns      string
	redis   string // unix socket
	opts    fleetOpts
	nodes   []*node.Node
}

type fleetOpts struct {
	timing      simstack.Timing
	leaseTTL    time.Duration
	jobTimeout  time.Duration
	maxInflight int
	vendors     []string // task kinds to configure; default CBC only
	// rate is the fleet-wide requests per second per vendor (0 = none).
	rate float64
	// requestTimeout bounds one vendor request (default 5s).
	requestTimeout time.Duration
	// cancelTimeout bounds a vendor cancel's attempts (default the runner's).
	cancelTimeout time.Duration
	// cytomicRound is the Cytomic batch round period (default 100ms).
	cytomicRound time.Duration
	// redact masks the simulators' credentials as `worker run` masks the
	// configured ones; logs (when set) receives every worker's log entries.
	redact *redact.Set
	logs   zapcore.Core
	// watchEvery and remindEvery are the node's WatchEvery and RemindEvery
	// (default: the node's defaults).
	watchEvery, remindEvery time.Duration
}

func newFleet(t *testing.T, o fleetOpts) *fleet {
	t.Helper()
	if o.timing == (simstack.Timing{}) {
		o.timing = simstack.TestTiming
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = 10 * time.Second
	}
	if len(o.vendors) == 0 {
		o.vendors = []string{edr.KindCBCEventExport}
	}
	if o.cytomicRound == 0 {
		o.cytomicRound = 100 * time.Millisecond
	}
	if o.requestTimeout == 0 {
		o.requestTimeout = 5 * time.Second
	}
	kc := testutil.Kafka(t,
		kfake.SeedTopics(partitions, testutil.TopicOSL, testutil.TopicSVG, testutil.TopicDLQ, testutil.TopicResult),
		kfake.GroupMinSessionTimeout(time.Second),
		// Job topics accept records over MAX_MESSAGE_BYTES, as a topic with
		// a larger max.message.bytes would, so oversized ones reach intake.
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4194304"}),
	)
	stack, err := simstack.Start(simstack.Config{Timing: o.timing})
	require.NoError(t, err)
	t.Cleanup(stack.Close)
	prod := testutil.Client(t, kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ProducerLinger(0), kgo.ProducerBatchMaxBytes(4<<20))
	f := &fleet{t: t, kafka: kc, brokers: kc.ListenAddrs(), prod: prod, stack: stack,
		ns: testenv.Namespace(t), redis: testenv.Redis(t).Socket, opts: o}
	t.Cleanup(f.stopAll)
	return f
}

// partitionableDialer lets a test cut a worker off Redis, as a network
// partition would, and heal it again.
type partitionableDialer struct {
	cut   atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func (p *partitionableDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.cut.Load() {
		return nil, errors.New("partitioned from Redis")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
	}
	return c, err
}

func (p *partitionableDialer) partition() {
	p.cut.Store(true)
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

func (p *partitionableDialer) heal() { p.cut.Store(false) }

type workerHandle struct {
	*node.Node
	id     string
	dialer *partitionableDialer
}

func (f *fleet) startWorker(id string) *workerHandle {
	t := f.t
	t.Helper()
	pd := &partitionableDialer{}
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: f.redis, Dialer: pd.dial, PoolSize: 32,
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	store, err := state.New(rdb, state.Config{Namespace: f.ns, LeaseTTL: f.opts.leaseTTL})
	require.NoError(t, err)
	ua := fmt.Sprintf("analysisfleet/test (%s)", id)
	reg := node.NewRegistry()
	m := metrics.New(reg)
	sdb, err := sampledb.New(sampledb.Config{URL: f.stack.SampleDBURL, APIKey: simstack.AnalyzerKey, UserAgent: ua,
		InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxElapsed: 2 * time.Second,
		Transport: m.Transport("sampledb", nil)})
	require.NoError(t, err)
	n, err := node.Start(context.Background(), node.Config{
		WorkerID: id, Brokers: f.brokers,
		KafkaOpts: []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond), kgo.HeartbeatInterval(500 * time.Millisecond)},
		Store:     store,
		Intake:    intake.Config{Group: testutil.Group, SessionTimeout: 6 * time.Second},
		Runner: runner.Config{
			SampleDB:    sdb,
			Drivers:     f.drivers(ua, store, m),
			MaxInflight: f.opts.maxInflight,
			JobTimeout:  f.opts.jobTimeout,
			PollMin:     20 * time.Millisecond, PollMax: 200 * time.Millisecond,
			RetryMin: 20 * time.Millisecond, RetryMax: 300 * time.Millisecond,
			ClaimInterval: 100 * time.Millisecond, AbortPollInterval: 200 * time.Millisecond,
			DrainTimeout: f.opts.requestTimeout, ReconcileInterval: time.Hour,
			Redact: f.opts.redact, CancelTimeout: f.opts.cancelTimeout,
		},
		Registry: reg, Metrics: m, HTTPAddr: "127.0.0.1:0",
		RedisAddr: "unix:" + f.redis, WatchEvery: f.opts.watchEvery, RemindEvery: f.opts.remindEvery,
		Logger: f.logger(id),
	})
	require.NoError(t, err)
	w := &workerHandle{Node: n, id: id, dialer: pd}
	f.nodes = append(f.nodes, n)
	t.Cleanup(n.Stop) // before its Redis client closes
	return w
}

func (f *fleet) logger(id string) *zap.Logger {
	l := zaptest.NewLogger(f.t, zaptest.Level(zap.WarnLevel))
	if f.opts.logs != nil {
		l = l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, f.opts.logs) }))
	}
	return f.opts.redact.Logger(l).Named(id)
}

func (f *fleet) drivers(ua string, store *state.Store, m *metrics.Metrics) map[string]edr.Driver {
	t := f.t
	dl := httpc.NewDownloader(httpc.DownloadConfig{Hosts: []string{"127.0.0.1"}, Insecure: true, UserAgent: ua,
		Wrap: func(rt http.RoundTripper) http.RoundTripper { return m.Transport("download", rt) }})
	lim := func(name string) httpc.Limiter {
		if f.opts.rate <= 0 {
			return nil
		}
		l := store.RateLimiter(name, f.opts.rate, 1, nil)
		l.OnWait = m.RateLimitWait(name)
		return l
	}
	out := map[string]edr.Driver{}
	for _, kind := range f.opts.vendors {
		var d edr.Driver
		var err error
		switch kind {
		case edr.KindCBCEventExport:
			d, err = cbc.New(cbc.Config{URL: f.stack.CBCURL, OrgKey: simstack.CBCOrgKey, APIID: simstack.CBCAPIID,
				APISecret: simstack.CBCAPISecret, UserAgent: ua, Downloader: dl, Timeout: f.opts.requestTimeout, Limiter: lim("cbc"), Transport: m.Transport("cbc", nil)})
		case edr.KindCBLRTriage:
			d, err = cblr.New(cblr.Config{URL: f.stack.CBLRURL, APIToken: simstack.CBLRToken, UserAgent: ua,
				Timeout: f.opts.requestTimeout, PollInterval: 50 * time.Millisecond, Limiter: lim("cblr"), Transport: m.Transport("cblr", nil)})
		case edr.KindCytomicOSQuery:
			d, err = cytomic.New(cytomic.Config{URL: f.stack.CytomicURL, TokenURL: f.stack.CytomicURL + simcytomic.TokenPath,
				User: simstack.CytomicUser, Password: simstack.CytomicPassword, ClientIDs: simstack.CytomicClients,
				ClientID: simstack.CytomicClientID, ClientSecret: simstack.CytomicClientSecret,
				Round: f.opts.cytomicRound, UserAgent: ua, Downloader: dl, Timeout: f.opts.requestTimeout, Limiter: lim("cytomic"), Transport: m.Transport("cytomic", nil)})
		case edr.KindSophosXDR:
			d, err = sophos.New(sophos.Config{URL: f.stack.SophosURL, AuthURL: f.stack.SophosURL,
				ClientID: simstack.SophosClientID, ClientSecret: simstack.SophosClientSecret, TenantID: simstack.SophosTenantID,
				PollEvery: 50 * time.Millisecond, UserAgent: ua, Timeout: f.opts.requestTimeout, Limiter: lim("sophos"), Transport: m.Transport("sophos", nil)})
		default:
			t.Fatalf("unknown vendor %s", kind)
		}
		require.NoError(t, err)
		t.Cleanup(d.Close) // Cytomic's round loop
		out[kind] = d
	}
	return out
}

var allVendors = []string{edr.KindCBCEventExport, edr.KindCBLRTriage, edr.KindCytomicOSQuery, edr.KindSophosXDR}

func (f *fleet) stopAll() {
	for _, n := range f.nodes {
		n.Stop()
	}
}

// job returns a valid job message with a fresh ID and a unique sample hash.
func newJob(platform string) job.Message {
	id := uuid.NewString()
	sha := strings.ReplaceAll(uuid.NewString()+uuid.NewString(), "-", "")[:64]
	return job.Message{
		JobID: id,
		Submission: job.Submission{
			ID: uuid.NewString(), Customer: "customerid", Sample: job.Sample{ID: sha},
			Name: "sample.exe", MimeType: "application/octet-stream", TLP: "white",
			MetaData: map[string]any{"key": "value"},
		},
		Classification: job.Classification{Sample: sha, Type: "PE", SuperType: "executable", Arch: "x86", Platform: platform},
	}
}

// newJobs returns n jobs made by mk (newJob for platform, when nil)
// and their IDs.
func newJobs(n int, platform string, mk func() job.Message) (msgs []job.Message, ids []string) {
	for range n {
		var m job.Message
		if mk != nil {
			m = mk()
		} else {
			m = newJob(platform)
		}
		msgs = append(msgs, m)
		ids = append(ids, m.JobID)
	}
	return msgs, ids
}

// submit registers the job in SampleDB (as SampleDB does) and posts it.
func (f *fleet) submit(topic string, msgs ...job.Message) {
	f.t.Helper()
	var recs []*kgo.Record
	for _, m := range msgs {
		f.stack.SampleDB.CreateJob(m)
		b, err := json.Marshal(m)
		require.NoError(f.t, err)
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(m.JobID), Value: b})
	}
	f.produce(recs...)
}

func (f *fleet) produce(recs ...*kgo.Record) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(f.t, f.prod.ProduceSync(ctx, recs...).FirstErr())
}

func (f *fleet) state(id string) string {
	j, ok := f.stack.SampleDB.Job(id)
	if !ok {
		return ""
	}
	return j.State
}

// waitStates waits until every job is in a terminal state.
func (f *fleet) waitTerminal(ids []string, within time.Duration) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		for _, id := range ids {
			if !sampledb.IsTerminal(f.state(id)) {
				return false
			}
		}
		return true
	}, within, 20*time.Millisecond, "jobs did not all reach a terminal state")
}

// jobTransitions returns the applied job-level transitions of id.
func (f *fleet) jobTransitions(id string) []string {
	var out []string
	for _, tr := range f.stack.SampleDB.History(id) {
		if tr.TaskID == "" && tr.Status == 200 {
			out = append(out, tr.From+"→"+tr.To)
		}
	}
	return out
}

func (f *fleet) requireExactlyOneTerminal(id, want string) {
	f.t.Helper()
	require.Equal(f.t, []string{"enqueued→executing", "executing→" + want}, f.jobTransitions(id), "job %s", id)
}

func (f *fleet) lag() int64 {
	adm := kadm.NewClient(f.prod)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lags, err := adm.Lag(ctx, testutil.Group)
	require.NoError(f.t, err)
	l, ok := lags[testutil.Group]
	require.True(f.t, ok)
	require.NoError(f.t, l.Error())
	var total int64
	for _, topic := range []string{testutil.TopicOSL, testutil.TopicSVG} {
		total += l.Lag.TotalByTopic()[topic].Lag
	}
	return total
}

// waitGroupSpread waits until the consumer group has n members that each
// own at least one partition, so load spreads over every worker.
func (f *fleet) waitGroupSpread(n int) {
	f.t.Helper()
	adm := kadm.NewClient(f.prod)
	require.Eventually(f.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		groups, err := adm.DescribeGroups(ctx, testutil.Group)
		if err != nil {
			return false
		}
		g := groups[testutil.Group]
		if g.State != "Stable" || len(g.Members) != n {
			return false
		}
		for _, m := range g.Members {
			ca, ok := m.Assigned.AsConsumer()
			if !ok || len(ca.Topics) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the group did not spread over %d workers", n)
}

// dlq reads the dead letters until there are want of them.
func (f *fleet) dlq(want int) []*kgo.Record {
	f.t.Helper()
	return testutil.ReadN(testutil.Context(f.t, 20*time.Second), f.t, int64(want),
		[]kgo.Opt{kgo.SeedBrokers(f.brokers...)}, testutil.TopicDLQ)
}
