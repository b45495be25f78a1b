package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/tenant"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
	"github.com/analysisfleet/analysisfleet/state"
)

const devUsage = `usage: worker dev [flags]

Runs the whole fleet in one process: an in-process Kafka (kfake), Redis (the
machine's, else an embedded one), every simulator, N workers, a stream of
synthetic submissions, a live display and a summary that checks every job
reached exactly one terminal state. With --hold it then keeps running, with a
steady trickle of long jobs to abort, release and watch, until Ctrl-C;
"worker dev submit" (worker dev submit --help) posts one more job to it.

flags:
`

type devOptions struct {
	jobs, bad, aborts, workers, inflight int
	customers                            int
	rate                                 float64
	redis, logLevel                      string
	short, fast, quiet, hold             bool
	timeout                              time.Duration
	// --hold's trickle: a job every holdEvery whose CB Cloud and Sophos
	// queries take holdVendorTime, at most holdMax unfinished.
	holdEvery, holdVendorTime time.Duration
	holdMax                   int
	// stateDir receives the state file `worker dev submit` reads.
	stateDir string
}

// firstJobsShown is how many job IDs worker dev shows once they are posted.
const firstJobsShown = 5

// cmdDev runs the whole fleet in one process: an in-process Kafka (kfake),
// Redis (the machine's, else an embedded one), every simulator, N workers,
// a stream of synthetic submissions, a live display and a summary.
func cmdDev(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "submit" {
		return cmdDevSubmit(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("worker dev", flag.ContinueOnError)
	var o devOptions
	fs.IntVar(&o.jobs, "jobs", 300, "valid jobs to submit")
	fs.IntVar(&o.bad, "bad", 6, "bad records to submit (dead-lettered)")
	fs.IntVar(&o.aborts, "aborts", 6, "jobs to abort (half before they start, half while running)")
	fs.IntVar(&o.workers, "workers", 2, "workers in the consumer group")
	fs.IntVar(&o.customers, "customers", 2, "customers submitting jobs, each with vendor accounts of its own (1 or 2; 1 uses the single-account variables)")
	fs.IntVar(&o.inflight, "max-inflight", 200, "MAX_INFLIGHT per worker")
	fs.Float64Var(&o.rate, "rate", 30, "submissions per second")
	fs.StringVar(&o.redis, "redis", "auto", `"auto" (REDIS_URL or 127.0.0.1:6379 if reachable, else embedded), "embedded", or a redis:// URL`)
	fs.StringVar(&o.logLevel, "log-level", "info", "level of the workers' log file: debug, info, warn, error")
	fs.BoolVar(&o.short, "short", false, "a quick run: 40 jobs, fast simulators (used by the tests)")
	fs.BoolVar(&o.fast, "fast", false, "fast simulators (tens of milliseconds per vendor operation): a load generator")
	fs.BoolVar(&o.quiet, "quiet", false, "no live display; print only the summary")
	fs.BoolVar(&o.hold, "hold", false, "keep running after the summary until Ctrl-C, with a steady trickle of long jobs to abort, release and watch")
	fs.DurationVar(&o.holdEvery, "hold-every", 5*time.Second, "--hold: post a new long job this often")
	fs.DurationVar(&o.holdVendorTime, "hold-vendor-time", 3*time.Minute, "--hold: how long each long job's CB Cloud and Sophos queries run")
	fs.IntVar(&o.holdMax, "hold-max", 20, "--hold: at most this many long jobs unfinished at once")
	fs.StringVar(&o.stateDir, "state-dir", "", "where to leave the state file `worker dev submit` reads (default $"+devDirEnv+" or $TMPDIR/analysisfleet-dev-<uid>)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up if the jobs are not all terminal by then")
	if code, ok := parseFlags(fs, devUsage, args, stdout, stderr, false); !ok {
		return code
	}
	if o.holdEvery <= 0 || o.holdVendorTime <= 0 || o.holdMax < 1 {
		fmt.Fprintln(stderr, "worker dev: --hold-every and --hold-vendor-time must be positive, --hold-max at least 1")
		return 2
	}
	timing := simstack.DevTiming
	if o.short {
		o.jobs, o.bad, o.aborts, o.rate = min(o.jobs, 40), min(o.bad, 6), min(o.aborts, 4), 0
	}
	if o.short || o.fast {
		timing = simstack.TestTiming
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &dev{o: o, out: stdout, tty: isTTY(stdout) && !o.quiet}
	code, err := d.run(ctx, timing)
	if err != nil {
		fmt.Fprintf(stderr, "worker dev: %v\n", err)
		return 1
	}
	return code
}

type dev struct {
	o        devOptions
	out      io.Writer
	tty      bool
	stack    *simstack.Stack
	kafka    *kfake.Cluster
	admin    *kadm.Client
	prod     *kgo.Client
	nodes    []*node.Node
	accounts []*tenant.Registry
	cleanup  []func()
	// tenantsFile maps the simulated customers to their accounts (with
	// two customers).
	tenantsFile string
	rdb         *redis.Client
	ns          string
	redisIs     string
	logPath     string
	lines       int
	// redisURLUsed is printed for fleetctl (development Redis: no password).
	redisURLUsed string
	brokers      []string
	// consoleURL, when set before the banner, is printed in it as
	// "console: <url>" and written to the state file (the web console
	// serving this fleet). Empty prints nothing.
	consoleURL string
	statePath  string

	firstMu    sync.Mutex
	first      []string // the first job IDs posted (up to firstJobsShown)
	firstShown bool
}

func (d *dev) run(ctx context.Context, timing simstack.Timing) (int, error) {
	start := time.Now()
	customers := d.o.customers
	if customers == 0 {
		customers = 1
	}
	stack, err := simstack.Start(simstack.Config{Timing: timing, Customers: customers})
	if err != nil {
		return 1, err
	}
	d.stack = stack
	defer stack.Close()

	topics := intake.DefaultTopics
	kc, err := kfake.NewCluster(
		kfake.SeedTopics(6, append(append([]string{}, topics...), intake.DefaultDLQTopic, results.DefaultTopic)...),
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4194304"}),
	)
	if err != nil {
		return 1, fmt.Errorf("start kfake: %w", err)
	}
	d.kafka = kc
	defer kc.Close()
	d.prod, err = kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		return 1, err
	}
	defer d.prod.Close()
	d.admin = kadm.NewClient(d.prod)

	redisURL, closeRedis, err := d.redisURL(ctx)
	if err != nil {
		return 1, err
	}
	defer closeRedis()

	logf, err := os.CreateTemp("", "analysisfleet-dev-*.log")
	if err != nil {
		return 1, err
	}
	defer logf.Close()
	d.logPath = logf.Name()
	lvl, err := zapcore.ParseLevel(cmp.Or(d.o.logLevel, "info"))
	if err != nil {
		return 2, fmt.Errorf("--log-level: %w", err)
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logf), lvl))
	defer func() { _ = log.Sync() }()

	for i := range d.o.workers {
		n, err := d.startWorker(ctx, i+1, kc.ListenAddrs(), redisURL, log)
		if err != nil {
			return 1, err
		}
		d.nodes = append(d.nodes, n)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, n := range d.nodes {
			n.Drain(dctx)
		}
		for _, a := range d.accounts {
			a.Close()
		}
		for _, c := range d.cleanup {
			c()
		}
	}()

	d.redisURLUsed = redisURL
	d.brokers = kc.ListenAddrs()
	consoleURL, stopConsole, err := d.startConsole(ctx, redisURL, kc.ListenAddrs(), topics, log)
	if err != nil {
		return 1, fmt.Errorf("console: %w", err)
	}
	defer stopConsole()
	d.consoleURL = consoleURL
	removeState, err := d.writeState(cmp.Or(d.o.stateDir, devStateDir()))
	if err != nil {
		return 1, err
	}
	defer removeState()
	d.banner(kc.ListenAddrs()[0])
	maxMsg := intake.DefaultMaxMessageBytes
	genDone := make(chan struct{})
	var stats *loadgen.Stats
	var genErr error
	go func() {
		defer close(genDone)
		stats, genErr = loadgen.Run(ctx, loadgen.Config{
			Jobs: d.o.jobs, Bad: d.o.bad, Aborts: d.o.aborts, Rate: d.o.rate, Topics: topics, Seed: uint64(time.Now().UnixNano()),
			Sensors: []int64{1, 2, 3}, KnownSample: cblr.DefaultSampleSHA256(), KnownPath: cblr.DefaultSamplePath,
			Plant: stack.Plant, AbortAfter: abortAfter(timing), Customers: stack.Customers(), OnPosted: d.posted,
		}, stack.SampleDB, d.prod, maxMsg)
	}()

	deadline := time.NewTimer(d.o.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	interrupted := false
loop:
	for {
		select {
		case <-ctx.Done():
			interrupted = true
			break loop
		case <-deadline.C:
			break loop
		case <-tick.C:
		}
		finished := false
		select {
		case <-genDone:
			if genErr != nil {
				return 1, genErr
			}
			if d.done(stats) {
				break loop
			}
			finished = true
		default:
		}
		d.display(start, finished)
	}
	<-genDone
	d.display(start, true)
	ok := d.summary(start, stats, interrupted)
	if d.o.hold && !interrupted {
		d.holdBanner()
		if err := d.holdJobs(ctx); err != nil {
			return 1, err
		}
	}
	if !ok {
		return 1, nil
	}
	return 0, nil
}

func abortAfter(t simstack.Timing) time.Duration {
	return max(t.CBCQueued+t.CBCRun/2, 50*time.Millisecond)
}

func (d *dev) redisURL(ctx context.Context) (string, func(), error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	d.ns = "dev-" + hex.EncodeToString(b[:])
	try := func(url string) bool {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return false
		}
		c := redis.NewClient(opts)
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if c.Ping(pctx).Err() != nil {
			c.Close()
			return false
		}
		d.rdb = c
		return true
	}
	cleanup := func() {
		// Leave nothing behind in a shared Redis.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := d.rdb.Scan(ctx, 0, "{"+d.ns+"}:*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			d.rdb.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
		d.rdb.Close()
	}
	switch d.o.redis {
	case "auto":
		for _, u := range []string{os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"} {
			if u != "" && try(u) {
				d.redisIs = envconf.RedactURL(u) + " (namespace " + d.ns + ")"
				return u, cleanup, nil
			}
		}
	case "embedded":
	default:
		if !try(d.o.redis) {
			return "", nil, fmt.Errorf("--redis %s is not reachable", envconf.RedactURL(d.o.redis))
		}
		d.redisIs = envconf.RedactURL(d.o.redis) + " (namespace " + d.ns + ")"
		return d.o.redis, cleanup, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return "", nil, fmt.Errorf("start embedded Redis: %w", err)
	}
	url := "redis://" + mr.Addr()
	if !try(url) {
		mr.Close()
		return "", nil, errors.New("embedded Redis did not answer")
	}
	d.redisIs = "embedded miniredis at " + mr.Addr() + " (no redis-server was reachable)"
	return url, func() { d.rdb.Close(); mr.Close() }, nil
}

func (d *dev) startWorker(ctx context.Context, i int, brokers []string, redisURL string, log *zap.Logger) (*node.Node, error) {
	env := d.stack.Env()
	if len(d.stack.Accounts) > 1 {
		// Every customer's accounts from a tenants file, as in a
		// multi-customer deployment.
		dir, err := os.MkdirTemp("", "analysisfleet-dev-tenants-")
		if err != nil {
			return nil, err
		}
		d.cleanup = append(d.cleanup, func() { os.RemoveAll(dir) })
		if env, err = d.stack.TenantsEnv(dir); err != nil {
			return nil, err
		}
		d.tenantsFile = env["TENANTS_FILE"]
	}
	env["KAFKA_BROKERS"] = strings.Join(brokers, ",")
	env["REDIS_URL"] = redisURL
	env["REDIS_NAMESPACE"] = d.ns
	env["WORKER_ID"] = fmt.Sprintf("dev-worker-%d", i)
	env["HTTP_ADDR"] = "127.0.0.1:0"
	env["LEASE_TTL"] = "10s"
	env["ABORT_POLL_INTERVAL"] = "1s"
	env["KAFKA_SESSION_TIMEOUT"] = "6s"
	env["MAX_INFLIGHT"] = fmt.Sprint(d.o.inflight)
	env["DRAIN_TIMEOUT"] = "5s"
	env["CYTOMIC_ROUND"] = "1s"
	env["SOPHOS_POLL_INTERVAL"] = "1s"
	env["CBLR_POLL_INTERVAL"] = "500ms"
	// The simulators have no quota to protect: let the fleet go fast.
	limit := "200"
	if d.o.fast {
		limit = "5000" // measuring the fleet, not a vendor quota
	}
	for _, v := range []string{"CBC", "CBLR", "CYTOMIC", "SOPHOS"} {
		env[v+"_RATE_LIMIT"] = limit
		env[v+"_RATE_BURST"] = "20"
	}
	env["POLL_INTERVAL_MIN"], env["POLL_INTERVAL_MAX"] = "200ms", "2s"
	env["RETRY_BACKOFF_MIN"], env["RETRY_BACKOFF_MAX"] = "100ms", "2s"
	env["CLAIM_INTERVAL"] = "500ms"
	if d.o.short || d.o.fast {
		env["CYTOMIC_ROUND"], env["SOPHOS_POLL_INTERVAL"], env["CBLR_POLL_INTERVAL"] = "100ms", "100ms", "50ms"
	}
	// The same configuration path as `worker run`.
	cfg, err := loadConfig(envconf.FromMap(runVars, env))
	if err != nil {
		return nil, fmt.Errorf("dev configuration: %w", err)
	}
	opts, _ := redis.ParseURL(redisURL)
	rdb := redis.NewClient(opts)
	store, err := state.New(rdb, state.Config{Namespace: d.ns, LeaseTTL: cfg.leaseTTL})
	if err != nil {
		return nil, err
	}
	reg := node.NewRegistry()
	m := metrics.New(reg)
	cfg.node.Registry, cfg.node.Metrics = reg, m
	sdbc, err := newSampleDB(cfg, m, log)
	if err != nil {
		return nil, err
	}
	wlog := cfg.secrets.Logger(log).With(zap.String("worker_id", cfg.node.WorkerID))
	cfg.node.Store, cfg.node.Runner.SampleDB, cfg.node.Logger = store, sdbc, wlog
	accounts, err := newRegistry(cfg, store, m, wlog)
	if err != nil {
		return nil, err
	}
	d.accounts = append(d.accounts, accounts)
	cfg.node.Runner.Accounts = accounts
	return node.Start(ctx, cfg.node)
}

func (d *dev) banner(broker string) {
	s := d.stack
	w := d.out
	fmt.Fprintf(w, "analysisfleet %s — worker dev: the whole fleet in one process\n\n", version)
	fmt.Fprintf(w, "  Kafka (kfake)    %s   topics %s\n", broker, strings.Join(append(append([]string{}, intake.DefaultTopics...), intake.DefaultDLQTopic, results.DefaultTopic), ", "))
	fmt.Fprintf(w, "  Redis            %s\n", d.redisIs)
	fmt.Fprintf(w, "  SampleDB sim     %s/sampledb/v2/job   (API keys: %s analyzer, %s user, %s viewer)\n", s.SampleDBURL, simstack.AnalyzerKey, simstack.UserKey, simstack.ViewerKey)
	for _, a := range s.Accounts {
		if len(s.Accounts) > 1 {
			fmt.Fprintf(w, "  customer %q — its own vendor accounts:\n", a.Customer)
		}
		fmt.Fprintf(w, "  CB Cloud sim     %s\n  CB EDR LR sim    %s\n  Cytomic sim      %s\n  Sophos sim       %s\n", a.CBCURL, a.CBLRURL, a.CytomicURL, a.SophosURL)
	}
	if d.tenantsFile != "" {
		fmt.Fprintf(w, "  Tenants file     %s   (customer → vendor accounts; edit it and the workers reload it)\n", d.tenantsFile)
	}
	for _, n := range d.nodes {
		fmt.Fprintf(w, "  %-16s http://%s/metrics  /healthz  /readyz\n", n.Runner.WorkerID(), n.HTTPAddr())
	}
	fmt.Fprintf(w, "  Logs             %s\n", d.logPath)
	if d.statePath != "" {
		fmt.Fprintf(w, "  State file       %s   (where `worker dev submit` finds this fleet)\n", d.statePath)
	}
	fmt.Fprintln(w)
	d.tryLines(w)
	fmt.Fprintf(w, "Submitting %d jobs (%d bad records, %d aborts) at %.0f/s to %d workers…\n\n", d.o.jobs, d.o.bad, d.o.aborts, d.o.rate, len(d.nodes))
}

// tryLines prints what a person can do with the running fleet: the
// console, an analyst's abort, the operator's view, one more job.
func (d *dev) tryLines(w io.Writer) {
	s := d.stack
	if d.consoleURL != "" {
		fmt.Fprintf(w, "console: %s\n", d.consoleURL)
	}
	fmt.Fprintf(w, "Abort a running job by hand (an analyst's DELETE):\n  curl -s -X DELETE -H 'Argus-API-Key: %s' %s/sampledb/v2/job/<job id>\n", simstack.UserKey, s.SampleDBURL)
	fmt.Fprintf(w, "List the active jobs:\n  curl -s -H 'Argus-API-Key: %s' '%s/sampledb/v2/job?limit=5'\n", simstack.ViewerKey, s.SampleDBURL)
	fmt.Fprintf(w, "Look at the fleet as an operator (in another shell):\n  export %s\n", fleetctlEnv(d.brokers, d.redisURLUsed, d.ns))
	fmt.Fprintf(w, "  go run ./cmd/fleetctl status             # group, lag, workers, leases, outbox, dead letters\n")
	fmt.Fprintf(w, "  go run ./cmd/fleetctl job <job id>       # one job: plan, tasks, lease history\n")
	fmt.Fprintf(w, "  go run ./cmd/fleetctl release <job id>   # expire its lease: another worker takes it over\n")
	fmt.Fprintf(w, "Submit one more job:\n  %s\n\n", d.submitCommand())
}

// submitCommand is the `worker dev submit` line that reaches this fleet.
func (d *dev) submitCommand() string {
	if d.o.stateDir != "" {
		return "go run ./cmd/worker dev submit --state-dir " + d.o.stateDir
	}
	return "go run ./cmd/worker dev submit"
}

// posted notes a job ID loadgen posted (loadgen.Config.OnPosted).
func (d *dev) posted(id string) {
	d.firstMu.Lock()
	defer d.firstMu.Unlock()
	if len(d.first) < firstJobsShown {
		d.first = append(d.first, id)
	}
}

// firstJobs returns the first job IDs posted and whether they are to be
// shown now: once firstJobsShown are posted (or all, when fewer), once.
func (d *dev) firstJobs(genDone bool) ([]string, bool) {
	d.firstMu.Lock()
	defer d.firstMu.Unlock()
	if d.firstShown || len(d.first) == 0 || (len(d.first) < firstJobsShown && !genDone) {
		return nil, false
	}
	d.firstShown = true
	return append([]string(nil), d.first...), true
}

// printFirstJobs prints the first job IDs with the command to look at one.
func (d *dev) printFirstJobs(w io.Writer, ids []string) {
	fmt.Fprintf(w, "First jobs posted (look at one with the export line above: go run ./cmd/fleetctl job <id>):\n")
	for _, id := range ids {
		fmt.Fprintf(w, "  %s\n", id)
	}
	fmt.Fprintln(w)
}

// holdBanner says what --hold does after the summary.
func (d *dev) holdBanner() {
	w := d.out
	fmt.Fprintf(w, "\n--hold: still running. A new job whose CB Cloud and Sophos queries run for %s every %s (at most %d unfinished),\n"+
		"to abort, release and watch. Ctrl-C to stop.\n\n", d.o.holdVendorTime, d.o.holdEvery, d.o.holdMax)
	d.firstMu.Lock()
	ids := append([]string(nil), d.first...)
	d.firstMu.Unlock()
	d.tryLines(w)
	if len(ids) > 0 {
		d.printFirstJobs(w, ids)
	}
}

type counts map[string]int

func (d *dev) counts() counts {
	c := counts{}
	for _, j := range d.stack.SampleDB.Jobs() {
		c[j.State]++
	}
	return c
}

func (d *dev) dlqCount() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ends, err := d.admin.ListEndOffsets(ctx, intake.DefaultDLQTopic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func (d *dev) done(st *loadgen.Stats) bool {
	if st == nil {
		return false
	}
	for _, id := range st.Valid {
		j, ok := d.stack.SampleDB.Job(id)
		if !ok || !sampledb.IsTerminal(j.State) {
			return false
		}
	}
	return d.dlqCount() >= int64(d.o.bad)
}

func (d *dev) display(start time.Time, genDone bool) {
	if d.o.quiet {
		return
	}
	if ids, ok := d.firstJobs(genDone); ok {
		if d.tty && d.lines > 0 {
			fmt.Fprintf(d.out, "\033[%dA\r\033[J", d.lines) // the counters are redrawn below
			d.lines = 0
		}
		d.printFirstJobs(d.out, ids)
	}
	c := d.counts()
	term := c[sampledb.StateSuccess] + c[sampledb.StateFailed] + c[sampledb.StateAborted] + c[sampledb.StateTimeout]
	el := time.Since(start).Seconds()
	var inflight []string
	for _, n := range d.nodes {
		inflight = append(inflight, fmt.Sprintf("%s %d", n.Runner.WorkerID(), n.Runner.InFlight()))
	}
	lines := []string{
		fmt.Sprintf("  %5.1fs  enqueued %4d  executing %4d  │ success %4d  failed %3d  aborted %3d  timeout %3d │ dead letters %d",
			el, c[sampledb.StateEnqueued], c[sampledb.StateExecuting], c[sampledb.StateSuccess], c[sampledb.StateFailed],
			c[sampledb.StateAborted], c[sampledb.StateTimeout], max(d.dlqCount(), 0)),
		fmt.Sprintf("          %.1f jobs/s finished   in flight: %s", float64(term)/max(el, 0.001), strings.Join(inflight, ", ")),
	}
	if d.tty {
		if d.lines > 0 {
			fmt.Fprintf(d.out, "\033[%dA", d.lines)
		}
		for _, l := range lines {
			fmt.Fprintf(d.out, "\r\033[K%s\n", l)
		}
		d.lines = len(lines)
		return
	}
	if int(el*2)%4 == 0 { // every ~2s when not a terminal
		fmt.Fprintln(d.out, lines[0])
	}
}

// summary prints the outcome and checks what the product promises: every
// job in exactly one terminal state, bad records dead-lettered, aborted jobs
// aborted. It reports whether all checks passed.
func (d *dev) summary(start time.Time, st *loadgen.Stats, interrupted bool) bool {
	w := d.out
	fmt.Fprintln(w, "\n── summary ──────────────────────────────────────────────────────────")
	if st == nil {
		fmt.Fprintln(w, "  nothing was submitted")
		return false
	}
	byState := counts{}
	terminals, stuck, doubled := 0, 0, 0
	var lastEnd time.Time
	for _, id := range st.Valid {
		j, _ := d.stack.SampleDB.Job(id)
		byState[j.State]++
		if sampledb.IsTerminal(j.State) {
			terminals++
			if t := time.UnixMilli(j.EndTimestamp); t.After(lastEnd) {
				lastEnd = t
			}
		} else {
			stuck++
		}
		n := 0
		for _, tr := range d.stack.SampleDB.History(id) {
			if tr.TaskID == "" && tr.Status == 200 && sampledb.IsTerminal(tr.To) {
				n++
			}
		}
		if n > 1 {
			doubled++
		}
	}
	span := lastEnd.Sub(st.First).Seconds()
	fmt.Fprintf(w, "  jobs submitted      %d valid, %d bad records\n", len(st.Valid), sum(st.Bad))
	fmt.Fprintf(w, "  terminal states     success %d, failed %d, aborted %d, timeout %d\n",
		byState[sampledb.StateSuccess], byState[sampledb.StateFailed], byState[sampledb.StateAborted], byState[sampledb.StateTimeout])
	if span > 0 {
		fmt.Fprintf(w, "  throughput          %.1f jobs/s from first submission to last terminal state (%.1fs)\n", float64(terminals)/span, span)
	}
	fmt.Fprintf(w, "  wall time           %.1fs\n", time.Since(start).Seconds())
	var vendors []string
	for name, k := range d.stack.Kits() {
		vendors = append(vendors, fmt.Sprintf("%s %d", name, len(k.Requests())))
	}
	sort.Strings(vendors)
	fmt.Fprintf(w, "  HTTP requests       %s\n", strings.Join(vendors, ", "))
	fmt.Fprintf(w, "  dead letters        %d (expected %d)\n", max(d.dlqCount(), 0), sum(st.Bad))

	aborted := 0
	for _, id := range append(append([]string{}, st.AbortedEarly...), st.AbortedLate...) {
		if j, _ := d.stack.SampleDB.Job(id); j.State == sampledb.StateAborted {
			aborted++
		}
	}
	fmt.Fprintf(w, "  aborts              %d of %d requested ended aborted (a late abort can lose the race to a finished job)\n",
		aborted, len(st.AbortedEarly)+len(st.AbortedLate))
	ok := stuck == 0 && doubled == 0 && d.dlqCount() >= int64(sum(st.Bad)) && !interrupted
	earlyOK := true
	for _, id := range st.AbortedEarly {
		if j, _ := d.stack.SampleDB.Job(id); j.State != sampledb.StateAborted {
			earlyOK = false
		}
	}
	ok = ok && earlyOK
	switch {
	case ok:
		fmt.Fprintf(w, "  checks              OK — every job reached exactly one terminal state; bad records dead-lettered; early aborts aborted\n")
	default:
		fmt.Fprintf(w, "  checks              FAILED — %d jobs not terminal, %d with two terminal states, early aborts ok=%v, interrupted=%v\n",
			stuck, doubled, earlyOK, interrupted)
	}
	return ok
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
