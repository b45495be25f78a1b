// Command worker is the analysisfleet daemon.
//
//	worker run    the production worker, configured by the environment
//	              (runVars in envtable.go; README; worker run --help)
//	worker dev    everything in one process: in-process Kafka, Redis, simulators,
//	              synthetic submissions, a live progress display and a summary
//	              (--hold: then a trickle of long jobs until Ctrl-C)
//	worker dev submit  post one job to the running worker dev (devhold.go)
//	worker sim    the simulators alone, on fixed ports (multi-process tests)
//	worker bench  measure one worker holding N long jobs (internal/bench)
//	worker healthcheck  probe /readyz (container healthchecks without curl)
//	worker version
//
// Every command takes -h/--help: it prints its usage and exits 0.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/reach"
	"github.com/analysisfleet/analysisfleet/internal/tenant"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: worker <command>

commands:
  run       run a worker (configured by environment variables: worker run --help)
  dev       run the whole fleet in one process with simulators and a live display
            (--hold: keep it running with a trickle of long jobs)
  dev submit  submit one job to the running worker dev and print its ID
  sim       serve the simulators on fixed ports (for multi-process tests)
  bench     measure one worker holding N long jobs (RSS, CPU, Redis, SampleDB, aborts)
  healthcheck [addr]  exit 0 if the worker at addr (default HTTP_ADDR or :8080) is ready
  version   print the version

Every command takes --help.
`

const runUsage = `usage: worker run

Runs a worker: it joins the consumer group, admits jobs into the Redis ledger,
hunts each sample at its customer's EDR vendors and reports to SampleDB. It is
configured by these environment variables (README.md, "Configuration"); a
secret may instead come from the file named by <NAME>_FILE. A bad
configuration is reported with every problem on a line of its own, each naming
its variable, and exit status 2. SIGTERM or SIGINT drains and stops it.

`

const healthcheckUsage = `usage: worker healthcheck [addr]

Asks the worker at addr (default: HTTP_ADDR, else :8080; a bare :port means
127.0.0.1) for /readyz and exits 0 when it answers 200, 1 otherwise. For
container healthchecks: the image has no shell or curl.
`

const versionUsage = `usage: worker version

Prints the version of this worker binary.
`

// parseFlags parses a subcommand's flags. Its usage (the text, then the
// flags) goes to stdout when help is asked (exit 0), to stderr with a flag
// error (exit 2); with noArgs a positional argument is an error too. ok
// false: return code.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer, noArgs bool) (code int, ok bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if envconf.HelpAsked(args) {
		fs.SetOutput(stdout)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if noArgs && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		if envconf.HelpAsked(args[1:]) {
			return runHelp(stdout)
		}
		return cmdRun(stderr)
	case "dev":
		return cmdDev(args[1:], stdout, stderr)
	case "sim":
		return cmdSim(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		if envconf.HelpAsked(args[1:]) {
			fmt.Fprint(stdout, versionUsage)
			return 0
		}
		fmt.Fprintln(stdout, "analysisfleet worker", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "worker: unknown command %q\n%s", args[0], usage)
	return 2
}

// runHelp prints `worker run --help`: the variables of runVars, without
// reading the environment.
func runHelp(stdout io.Writer) int {
	fmt.Fprint(stdout, runUsage)
	if err := runVars.Help(stdout, 80); err != nil {
		return 1
	}
	return 0
}

func cmdRun(stderr io.Writer) int {
	cfg, err := loadConfig(envconf.New(runVars, nil))
	if err != nil {
		for _, p := range envconf.AsProblems(err) {
			fmt.Fprintf(stderr, "worker: configuration error: %v\n", p)
		}
		return 2
	}
	log := cfg.secrets.Logger(newLogger(cfg.logLevel)).With(zap.String("worker_id", cfg.node.WorkerID))
	defer func() { _ = log.Sync() }()
	redis.SetLogger(redisLogger{log.Named("redis")})
	if cfg.insecure {
		log.Warn("INSECURE_HTTP is set: plain http:// and loopback targets are allowed. Never use this in production.")
	}
	if cfg.failpoints != "" {
		if err := failpoint.Arm(cfg.failpoints); err != nil {
			fmt.Fprintf(stderr, "worker: configuration error: ANALYSISFLEET_FAILPOINTS: %v\n", err)
			return 2
		}
		log.Warn("failpoints armed: this process will kill itself at chosen points (fault-injection tests only)", zap.String("failpoints", cfg.failpoints))
	}
	if cfg.debugAddr != "" {
		serveDebug(cfg.debugAddr, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	rdb := cfg.redis.NewClient() // a cluster client with REDIS_CLUSTER_ADDRS
	defer rdb.Close()
	store, err := state.New(rdb, state.Config{Namespace: cfg.ns, LeaseTTL: cfg.leaseTTL})
	if err != nil {
		fmt.Fprintf(stderr, "worker: configuration error: %v\n", err)
		return 2
	}
	if err := waitRedis(ctx, store, cfg.node.RedisAddr, log); err != nil {
		return 1
	}
	reg := node.NewRegistry()
	m := metrics.New(reg)
	cfg.node.Registry, cfg.node.Metrics = reg, m
	sdb, err := newSampleDB(cfg, m, log)
	if err != nil {
		fmt.Fprintf(stderr, "worker: configuration error: SAMPLEDB_URL: %v\n", err)
		return 2
	}
	cfg.node.Runner.SampleDB = sdb
	cfg.node.Store = store
	cfg.node.Logger = log
	accounts, err := newRegistry(cfg, store, m, log)
	if err != nil {
		fmt.Fprintf(stderr, "worker: configuration error: %v\n", err)
		return 2
	}
	defer accounts.Close() // after the drain: Cytomic's round loops
	cfg.node.Runner.Accounts = accounts

	n, err := node.Start(ctx, cfg.node)
	if err != nil {
		log.Error("worker failed to start", zap.Error(err))
		return 1
	}
	stopReload := watchTenants(ctx, cfg, accounts, m, log)
	<-ctx.Done()
	log.Info("signal received: draining")
	stopReload()
	dctx, cancel := context.WithTimeout(context.Background(), cfg.node.Runner.DrainTimeout+15*time.Second)
	defer cancel()
	n.Drain(dctx)
	log.Info("worker stopped")
	return 0
}

// watchTenants reloads TENANTS_FILE when it changes, until the returned
// function is called (which waits for the watcher to stop).
func watchTenants(ctx context.Context, cfg *config, reg *tenant.Registry, m *metrics.Metrics, log *zap.Logger) (stop func()) {
	if cfg.tenantsFile == "" {
		return func() {}
	}
	r := &tenant.Reloader{
		Path: cfg.tenantsFile, Registry: reg, Every: cfg.reloadEvery, Log: log.Named("tenants"),
		Check:  func(u string) error { return envconf.CheckURL(u, cfg.insecure) },
		Loaded: func(c tenant.Config) { addTenantSecrets(cfg.secrets, c) },
		Result: m.TenantsReloaded,
	}
	r.Prime(cfg.tenantsDigest)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// apiTransport is the base transport of SampleDB and vendor API clients:
// lease-guarded connections (httpc.NewTransport) that, unless insecure,
// refuse loopback and link-local addresses at dial time.
func apiTransport(insecure bool) *http.Transport {
	if insecure {
		return httpc.NewTransport()
	}
	return httpc.RefuseLocal(httpc.NewTransport())
}

// waitRedis waits for Redis at startup instead of crash-looping. That
// Redis does not answer is said once at ERROR, with where and why, again
// every reach.DefaultRemindEvery while it lasts, and when it answers.
func waitRedis(ctx context.Context, store *state.Store, addr string, log *zap.Logger) error {
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval, bo.MaxElapsedTime = 10*time.Second, 0
	tr := &reach.Tracker{Name: "redis", Addr: addr, Log: log}
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		tr.Observe(err)
		if err == nil {
			return nil
		}
		wait := bo.NextBackOff()
		log.Debug("Redis ping failed", zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func newSampleDB(cfg *config, m *metrics.Metrics, log *zap.Logger) (*sampledb.Client, error) {
	c := cfg.sampledb
	c.Transport = m.Transport("sampledb", apiTransport(cfg.insecure))
	c.Logger = log.Named("sampledb")
	return sampledb.New(c)
}

// cmdHealthcheck asks a worker's /readyz and exits 0 when it is ready: the
// image has no shell or curl, so container healthchecks run this.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	if envconf.HelpAsked(args) {
		fmt.Fprint(stdout, healthcheckUsage)
		return 0
	}
	addr := cmp.Or(os.Getenv("HTTP_ADDR"), ":8080")
	if len(args) > 0 {
		addr = args[0]
	}
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		fmt.Fprintf(stderr, "worker healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "worker healthcheck: not ready: %s\n", strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintln(stdout, "ready")
	return 0
}

// redisLogger puts go-redis's own messages (its connection pool's dial
// failures, several per attempt) in the structured log at DEBUG instead of
// bare lines on stderr: that Redis does not answer is said once, clearly,
// by reach.Tracker (waitRedis, the node's watch).
type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...))
}
