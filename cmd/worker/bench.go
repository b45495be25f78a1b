package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/analysisfleet/analysisfleet/internal/bench"
)

// sweepJobs are the N of `worker bench --sweep`.
var sweepJobs = []int{1000, 10000, 100000}

// cmdBench measures one worker holding N long jobs (internal/bench): the
// worker is this executable's `worker run` in a child process; the
// simulators, Kafka and a private redis-server are the bench's.
func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker bench", flag.ContinueOnError)
	var cfg bench.Config
	jobs := fs.String("jobs", "1000", "jobs in flight: N, or a comma-separated list of N run in turn")
	sweep := fs.Bool("sweep", false, "run N = 1000, 10000, 100000 in turn (stops after a run that does not reach steady state)")
	mix := fs.String("mix", "cbc", `vendor mix: groups of vendors joined by "+", weighted by "=w": "cbc", "cbc+sophos", "cbc=3,sophos=1,cytomic=1"`)
	fs.DurationVar(&cfg.Window, "window", bench.DefaultWindow, "measurement window in steady state")
	fs.DurationVar(&cfg.Idle, "idle", bench.DefaultIdle, "measurement of the idle worker before the jobs")
	fs.DurationVar(&cfg.Waiting, "waiting", bench.DefaultWindow, "measurement before the window, with no aborts: what holding the jobs costs (negative: none)")
	fs.DurationVar(&cfg.Settle, "settle", 0, "wait after steady state before the window (lets polling reach its longest interval)")
	fs.IntVar(&cfg.Aborts, "aborts", 0, "jobs aborted during the window (0: N/20 within [1, 100]; -1: none)")
	fs.DurationVar(&cfg.VendorTime, "vendor-time", bench.DefaultVendorTime, "how long every vendor operation runs (must outlast the run)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "worker LEASE_TTL (0: the worker's default)")
	fs.DurationVar(&cfg.AbortPollInterval, "abort-poll-interval", 0, "worker ABORT_POLL_INTERVAL (0: the worker's default)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 0, "worker MAX_INFLIGHT (0: N; never less than N)")
	fs.Float64Var(&cfg.RateLimit, "rate-limit", bench.DefaultRateLimit, "every vendor's fleet-wide rate limit, requests/s (the worker accepts up to 10000)")
	fs.DurationVar(&cfg.AdmitTimeout, "admit-timeout", bench.DefaultAdmitTimeout, "give up waiting for steady state after this (the window then measures what the worker holds)")
	maxRSS := fs.Int64("max-rss-mib", bench.DefaultMaxRSS>>20, "stop a run when the worker's RSS passes this many MiB")
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "the redis-server binary the bench starts privately")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the worker's logs (default: a new temporary directory)")
	worker := fs.String("worker", "", "the worker executable, run as `<worker> run` (default: this one)")
	var env envFlags
	fs.Var(&env, "env", "extra worker environment KEY=VALUE (repeatable; overrides the bench's)")
	output := fs.String("o", "table", "output: table or json")
	jsonFile := fs.String("json", "", "also write the results as JSON to this file")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if code, ok := parseFlags(fs, "usage: worker bench [flags]\n\n"+
		"Measures one worker (`worker run` in a child process) holding N long jobs against\n"+
		"the simulators, Kafka and a private redis-server: RSS, CPU, Redis and SampleDB\n"+
		"load, abort latency (internal/bench; BENCH.md).\n\nflags:\n", args, stdout, stderr, true); !ok {
		return code
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "worker bench: -o %q: table or json\n", *output)
		return 2
	}
	var ns []int
	if *sweep {
		ns = sweepJobs
	} else {
		for _, s := range strings.Split(*jobs, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "worker bench: --jobs %q: positive integers\n", *jobs)
				return 2
			}
			ns = append(ns, n)
		}
	}
	m, err := bench.ParseMix(*mix)
	if err != nil {
		fmt.Fprintf(stderr, "worker bench: --mix: %v\n", err)
		return 2
	}
	cfg.Mix, cfg.MaxRSS, cfg.Env = m, *maxRSS<<20, env.m
	if cfg.Aborts < 0 {
		cfg.Aborts = -1
	}
	exe := *worker
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			fmt.Fprintf(stderr, "worker bench: %v\n", err)
			return 1
		}
	}
	cfg.WorkerCommand = []string{exe, "run"}
	if !*quiet {
		cfg.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var results []*bench.Result
	code := 0
	for _, n := range ns {
		c := cfg
		c.Jobs = n
		if c.MaxInflight != 0 && c.MaxInflight < n {
			fmt.Fprintf(stderr, "worker bench: --max-inflight %d is less than N %d\n", c.MaxInflight, n)
			return 2
		}
		r, err := bench.Run(ctx, c)
		if err != nil {
			fmt.Fprintf(stderr, "worker bench: %v\n", err)
			return 1
		}
		r.Worker = workerIdentity(*worker)
		results = append(results, r)
		if !r.Steady {
			code = 1
			if n != ns[len(ns)-1] {
				fmt.Fprintf(stderr, "worker bench: N=%d did not reach steady state; not running larger N\n", n)
			}
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if *jsonFile != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "worker bench: --json: %v\n", err)
			code = 1
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return 1
		}
		return code
	}
	if len(results) > 0 {
		s := results[0].Settings
		fmt.Fprintf(stdout, "worker %s; mix %s; vendor operations %s; settle %s; window %s; LEASE_TTL %s; ABORT_POLL_INTERVAL %s\n\n",
			results[0].Worker, results[0].Mix, s.VendorTime, cmp.Or(s.Settle, "0s"), s.Window, s.LeaseTTL, s.AbortPollInterval)
	}
	bench.WriteTable(stdout, results)
	return code
}

// workerIdentity says which worker was measured: this executable's version
// and commit, or the path of another.
func workerIdentity(other string) string {
	if other != "" {
		return other
	}
	id := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			id += " " + rev[:min(len(rev), 12)]
			if modified == "true" {
				id += " (modified)"
			}
		}
	}
	return id
}

// envFlags collects repeated --env KEY=VALUE.
type envFlags struct{ m map[string]string }

func (e *envFlags) String() string { return "" }

func (e *envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	if e.m == nil {
		e.m = map[string]string{}
	}
	e.m[k] = v
	return nil
}
