// Package node assembles one worker process: Kafka intake (consumer), the
// job runner (worker) over the Redis ledger (state), and the HTTP surface
// (/healthz, /readyz, /metrics). cmd/worker builds a node from the
// environment; worker dev and the integration tests build one directly.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/reach"
	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/state"
)

// Config is everything a node needs: the shared Kafka connection, and each
// component's own configuration, embedded as it is (the node is the one
// place that composes them). cmd/worker fills it from the environment
// contract; tests and worker dev fill it directly. Start fills in what the
// components share: the worker ID, the store, the logger, the observers,
// and the runner (intake's) and the result publisher (the runner's).
type Config struct {
	WorkerID string

	// Brokers and KafkaOpts (TLS, SASL) are the Kafka connection intake and
	// the result publisher share.
	Brokers   []string
	KafkaOpts []kgo.Opt

	// Store is the job ledger (state.New over the fleet's Redis). Required.
	Store *state.Store

	// Intake configures Kafka intake (topics, group, dead letters, caps).
	Intake intake.Config
	// Runner configures the job runner (SampleDB, vendor accounts, capacity,
	// timings, redaction).
	Runner runner.Config
	// ResultTopic receives job summaries (results.DefaultTopic if empty);
	// NoResults disables them.
	ResultTopic string
	NoResults   bool

	// HTTPAddr serves /healthz, /readyz, /metrics; empty disables.
	HTTPAddr string

	// RedisAddr says where the ledger's Redis is, without credentials
	// (envconf.RedisConfig.Show), for the log lines that say it is
	// unreachable.
	RedisAddr string
	// WatchEvery is how often the node probes Kafka and Redis to say in the
	// log when either stops or starts answering (internal/reach); default
	// DefaultWatchEvery.
	WatchEvery time.Duration
	// RemindEvery is how often an outage that lasts is logged again;
	// default reach.DefaultRemindEvery.
	RemindEvery time.Duration
	// Registry receives the node's metrics; nil creates one.
	Registry *prometheus.Registry
	// Metrics, when the caller already created them on Registry (to wrap
	// the drivers' transports), are used; nil creates them.
	Metrics *metrics.Metrics
	Logger  *zap.Logger
}

// Node is a running worker process.
type Node struct {
	cfg      Config
	log      *zap.Logger
	Store    *state.Store
	Runner   *runner.Runner
	Consumer *intake.Consumer
	Registry *prometheus.Registry

	http      *http.Server
	httpAddr  string
	draining  atomic.Bool
	readyMu   sync.Mutex
	readyAt   time.Time
	readyErr  error
	intake    context.CancelFunc
	intakeErr chan error
	stopWatch context.CancelFunc
	watchDone chan struct{}
	results   *results.Publisher
	wg        sync.WaitGroup
	stopOnce  sync.Once
}

// Start builds and starts a node: the runner's loops, then intake, then the
// HTTP surface.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	store := cfg.Store
	if store == nil {
		return nil, errors.New("node: Store is required")
	}
	reg := cfg.Registry
	if reg == nil {
		reg = NewRegistry()
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New(reg)
	}
	n := &Node{cfg: cfg, log: log, Store: store, Registry: reg, intakeErr: make(chan error, 1)}

	var pub *results.Publisher
	if !cfg.NoResults {
		var err error
		pub, err = results.New(results.Config{Brokers: cfg.Brokers, Topic: cfg.ResultTopic,
			Opts: cfg.KafkaOpts})
		if err != nil {
			return nil, err
		}
	}
	wcfg := cfg.Runner
	wcfg.WorkerID, wcfg.Store, wcfg.Logger, wcfg.Observer = cfg.WorkerID, store, log, m
	if pub != nil {
		wcfg.Results = pub
		n.results = pub
	}
	runner, err := runner.New(wcfg)
	if err != nil {
		n.closeResults()
		return nil, err
	}
	n.Runner = runner
	icfg := cfg.Intake
	icfg.Brokers, icfg.WorkerID, icfg.Store, icfg.Runner, icfg.Logger, icfg.Observer = cfg.Brokers, cfg.WorkerID, store, runner, log, m
	icfg.Opts = append(append(append([]kgo.Opt{}, cfg.KafkaOpts...), icfg.Opts...), m.KafkaHooks())
	cons, err := intake.New(icfg)
	if err != nil {
		n.closeResults()
		return nil, err
	}
	n.Consumer = cons
	m.Gauges(runner.InFlight, runner.Keeper().Len, store.OutboxDepth)
	m.Ready(func() bool { return n.Ready(context.Background()) == nil })
	if err := runner.Start(ctx); err != nil {
		cons.Close()
		n.closeResults()
		return nil, fmt.Errorf("start runner: %w", err)
	}
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.intake = cancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.intakeErr <- cons.Run(ictx)
	}()
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	n.stopWatch, n.watchDone = wcancel, make(chan struct{})
	go func() {
		defer close(n.watchDone)
		n.watch(wctx)
	}()
	if cfg.HTTPAddr != "" {
		if err := n.serveHTTP(); err != nil {
			n.Stop()
			return nil, err
		}
	}
	log.Info("worker started", zap.String("worker_id", cfg.WorkerID), zap.Strings("brokers", cfg.Brokers))
	return n, nil
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// HTTPAddr returns the address the HTTP surface listens on.
func (n *Node) HTTPAddr() string { return n.httpAddr }

func (n *Node) serveHTTP() error {
	// Read-only endpoints: GET (and HEAD) only; anything else is 405.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.Registry, promhttp.HandlerOpts{Registry: n.Registry}))
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", n.cfg.HTTPAddr, err)
	}
	n.httpAddr = ln.Addr().String()
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP server failed", zap.Error(err))
		}
	}()
	return nil
}

// readyFor is how long a readiness answer is reused: probes, scrapes and
// curl loops cost at most one Redis PING and one Kafka round trip per
// interval, however often they ask.
const readyFor = time.Second

// Ready reports whether the node can take work: Kafka and Redis answer and
// it is not draining. The answer of the checks is reused for readyFor.
func (n *Node) Ready(ctx context.Context) error {
	if n.draining.Load() {
		return errors.New("draining")
	}
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	if !n.readyAt.IsZero() && time.Since(n.readyAt) < readyFor {
		return n.readyErr
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n.readyErr = nil
	if err := n.Store.Ping(ctx); err != nil {
		n.readyErr = fmt.Errorf("redis: %w", err)
	} else if err := n.Consumer.Ping(ctx); err != nil {
		n.readyErr = fmt.Errorf("kafka: %w", err)
	}
	n.readyAt = time.Now()
	return n.readyErr
}

// DefaultWatchEvery is how often a node probes Kafka and Redis for the log.
const DefaultWatchEvery = 5 * time.Second

// watch probes Redis and Kafka every WatchEvery, from the start, until ctx
// ends, and says in the log when either stops answering (once, at ERROR,
// with its address and the cause), reminds while it stays so, and says
// when it answers again. /readyz says the same to whoever asks; this says
// it to whoever reads the log.
func (n *Node) watch(ctx context.Context) {
	every := cmp.Or(n.cfg.WatchEvery, DefaultWatchEvery)
	rd := &reach.Tracker{Name: "redis", Addr: cmp.Or(n.cfg.RedisAddr, "the ledger's Redis"), Log: n.log,
		RemindEvery: n.cfg.RemindEvery}
	kf := &reach.Tracker{Name: "kafka", Addr: "brokers " + strings.Join(n.cfg.Brokers, ","), Log: n.log,
		RemindEvery: n.cfg.RemindEvery}
	probe := func(tr *reach.Tracker, ping func(context.Context) error) {
		pctx, cancel := context.WithTimeout(ctx, min(every, 3*time.Second)+time.Second)
		err := ping(pctx)
		cancel()
		if ctx.Err() == nil {
			tr.Observe(err)
		}
	}
	probeBoth := func(context.Context) {
		probe(rd, n.Store.Ping)
		probe(kf, n.Consumer.Ping)
	}
	probeBoth(ctx)
	startstop.Every(ctx, every, probeBoth)
}

// Drain is the SIGTERM path: stop intake (commit and leave the group), let
// jobs reach a safe point and hand their leases over, then close.
func (n *Node) Drain(ctx context.Context) {
	n.draining.Store(true)
	n.log.Info("draining: intake stops, leases are handed over")
	n.intake()
	n.Runner.Drain(ctx)
	n.Stop()
}

// Stop stops everything at once (leases are left to expire, as in a crash
// of the process). Safe to call more than once.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		n.draining.Store(true)
		n.stopWatch() // before the clients close: that is no outage
		<-n.watchDone
		n.intake()
		n.Runner.Stop()
		n.closeResults() // after the runner: its last jobs published
		n.Consumer.Close()
		if n.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = n.http.Shutdown(ctx)
			cancel()
		}
		n.wg.Wait()
	})
}

func (n *Node) closeResults() {
	if n.results != nil {
		n.results.Close()
	}
}
