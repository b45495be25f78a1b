// Package bench measures what one worker costs while it holds N long jobs
// in flight: memory and CPU, Redis commands, SampleDB and vendor traffic,
// abort latency and admission rate. `worker bench` runs it.
//
// The worker runs as a child process (`worker run`, configured by the
// environment like any deployment), so what /proc says of it is the
// worker's alone; everything it talks to is started by the bench and
// belongs to this run only:
//
//	bench process                                         child processes
//	┌───────────────────────────────────────────┐
//	│ simulators (simstack): SampleDB, CB Cloud, │◄──HTTP──┐
//	│   Sophos, Cytomic: vendor operations that  │         │
//	│   outlast the run; request logs = traffic  │      ┌──┴──────────┐   /proc/<pid>/stat, status
//	│ Kafka (kfake) ◄── N job records ───────────│◄─────│ worker run  │◄── RSS, CPU
//	│ sampler: /proc, INFO, request logs,        │      └──┬──────────┘   /metrics: goroutines, heap
//	│   aborts (SampleDB DELETE, in process)     │         │
//	└───────────────────────────────────────────┘         ▼
//	                                          redis-server (private, unix socket):
//	                                          INFO commandstats, used_memory
//
// A run: start everything, wait until the worker is ready, measure it idle
// (Config.Idle), submit N jobs (registered with SampleDB, then produced),
// wait until every job is admitted (SampleDB says executing) and every
// vendor operation started (the simulators count them), optionally settle,
// then measure the window (Config.Window), aborting a sample of jobs during
// its first half and timing each until SampleDB records it aborted. Every
// wait has a deadline; a worker that cannot hold N (too slow, too big, or
// dead) yields a Result that says what it reached and why it stopped.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// Defaults for Config fields left zero.
const (
	DefaultWindow       = 30 * time.Second
	DefaultIdle         = 5 * time.Second
	DefaultVendorTime   = time.Hour
	DefaultRateLimit    = 10000 // the most the worker accepts: starts are not throttled
	DefaultAdmitTimeout = 10 * time.Minute
	DefaultMaxRSS       = 16 << 30
)

// Config configures one run.
type Config struct {
	// Jobs is N, the jobs held in flight. Required.
	Jobs int
	// WorkerCommand is the argv of a `worker run` (the environment is the
	// bench's). Required.
	WorkerCommand []string
	// Mix is the vendor mix; default DefaultMix (every job a CB Cloud
	// export).
	Mix Mix
	// Window is the measurement; default DefaultWindow.
	Window time.Duration
	// Idle is the measurement of the idle worker before any job; default
	// DefaultIdle.
	Idle time.Duration
	// Settle is a wait between steady state and the window, for the
	// runner's polling to reach its long intervals; default none.
	Settle time.Duration
	// Waiting is a measurement before the window in which nothing is
	// aborted and nothing ends: what holding the jobs costs; default
	// DefaultWindow, negative none.
	Waiting time.Duration
	// Aborts is how many jobs are aborted during the window's first half;
	// 0 means Jobs/20 within [1, 100]; negative, none.
	Aborts int
	// VendorTime is how long each vendor operation runs; default
	// DefaultVendorTime. It must outlast the run.
	VendorTime time.Duration
	// LeaseTTL and AbortPollInterval are the worker's LEASE_TTL and
	// ABORT_POLL_INTERVAL; zero leaves the worker's defaults.
	LeaseTTL, AbortPollInterval time.Duration
	// MaxInflight is the worker's MAX_INFLIGHT; default Jobs, and never
	// less.
	MaxInflight int
	// RateLimit is every vendor's fleet-wide rate limit (requests/s);
	// default DefaultRateLimit.
	RateLimit float64
	// Env is more worker environment, applied last (it overrides).
	Env map[string]string
	// RedisServer is the redis-server binary; default "redis-server" on
	// PATH.
	RedisServer string
	// AdmitTimeout bounds the wait for steady state; default
	// DefaultAdmitTimeout.
	AdmitTimeout time.Duration
	// AbortTimeout bounds the wait, after the window, for the aborted jobs
	// to end; default a minute plus twice the abort poll interval.
	AbortTimeout time.Duration
	// MaxRSS stops the run when the worker's RSS exceeds it; default
	// DefaultMaxRSS.
	MaxRSS int64
	// Dir receives the worker's log and playbook; default a new temporary
	// directory (kept: Result.Log names the log).
	Dir string
	// Progress receives a line every few seconds; nil discards.
	Progress io.Writer
}

func (c *Config) setDefaults() error {
	if c.Jobs < 1 {
		return errors.New("bench: Jobs must be at least 1")
	}
	if len(c.WorkerCommand) == 0 {
		return errors.New("bench: WorkerCommand is required")
	}
	if c.MaxInflight != 0 && c.MaxInflight < c.Jobs {
		return fmt.Errorf("bench: MaxInflight %d is less than Jobs %d: the worker could not hold them", c.MaxInflight, c.Jobs)
	}
	c.MaxInflight = cmp.Or(c.MaxInflight, c.Jobs)
	if len(c.Mix) == 0 {
		c.Mix = DefaultMix
	}
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.Waiting = cmp.Or(c.Waiting, DefaultWindow)
	c.Idle = cmp.Or(c.Idle, DefaultIdle)
	c.VendorTime = cmp.Or(c.VendorTime, DefaultVendorTime)
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.RedisServer = cmp.Or(c.RedisServer, "redis-server")
	c.AdmitTimeout = cmp.Or(c.AdmitTimeout, DefaultAdmitTimeout)
	c.MaxRSS = cmp.Or(c.MaxRSS, DefaultMaxRSS)
	if c.Aborts == 0 {
		c.Aborts = min(max(c.Jobs/20, 1), 100)
	}
	c.Aborts = max(c.Aborts, 0)
	if c.AbortTimeout == 0 {
		c.AbortTimeout = time.Minute + 2*cmp.Or(c.AbortPollInterval, runner.DefaultAbortPollInterval)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Result is what one run measured. Rates are per second of the phase;
// memory is in bytes.
type Result struct {
	Jobs     int      `json:"jobs"`
	Mix      string   `json:"mix"`
	Settings Settings `json:"settings"`
	// Worker identifies the worker measured (version, commit); set by the
	// caller.
	Worker string `json:"worker,omitempty"`

	// Steady says every job was admitted and every vendor operation
	// started; otherwise Note says where the run stopped.
	Steady bool   `json:"steady"`
	Note   string `json:"note,omitempty"`
	// Admitted is the jobs SampleDB saw leave "enqueued"; Started the
	// vendor operations started, by vendor; EndedEarly the jobs that ended
	// before the window (their vendor operations failed, say).
	Admitted   int            `json:"admitted"`
	Started    map[string]int `json:"started"`
	EndedEarly int            `json:"endedEarly"`
	// InFlight is the jobs held during the window: admitted, not ended.
	InFlight int `json:"inFlight"`
	// AdmissionSeconds is from the first record produced to steady state;
	// AdmissionRate is InFlight over it.
	AdmissionSeconds float64 `json:"admissionSeconds"`
	AdmissionRate    float64 `json:"admissionRate"`

	Idle Phase `json:"idle"`
	// Waiting is the phase before the window with no aborts
	// (Config.Waiting); Window the one with them.
	Waiting *Phase `json:"waiting,omitempty"`
	Window  *Phase `json:"window,omitempty"`
	// RSSPerJob is (window RSS − idle RSS) / the jobs held: the worker's
	// own count (Window.WorkerInFlight) if it exports one, else InFlight;
	// RedisBytesPerJob the same of Redis's used_memory.
	RSSPerJob        int64 `json:"rssPerJobBytes"`
	RedisBytesPerJob int64 `json:"redisBytesPerJob"`

	Aborts *Aborts `json:"aborts,omitempty"`
	// Warnings counts the worker's log lines at warn level or above, by
	// message.
	Warnings map[string]int `json:"warnings,omitempty"`
	Log      string         `json:"log,omitempty"`
	// LastRSS is the worker's RSS when the bench last looked (useful when
	// the run stopped early).
	LastRSS int64 `json:"lastRssBytes"`
	// WallSeconds is the whole run, setup and teardown included.
	WallSeconds float64 `json:"wallSeconds"`
}

// Settings are the knobs a run used.
type Settings struct {
	Window            string            `json:"window"`
	Settle            string            `json:"settle,omitempty"`
	VendorTime        string            `json:"vendorTime"`
	LeaseTTL          string            `json:"leaseTTL"`
	AbortPollInterval string            `json:"abortPollInterval"`
	MaxInflight       int               `json:"maxInflight"`
	RateLimit         float64           `json:"rateLimit"`
	Env               map[string]string `json:"env,omitempty"`
}

// Phase is one measured interval.
type Phase struct {
	Seconds float64 `json:"seconds"`
	// RSS is the mean of once-a-second samples (the end value when the
	// phase is shorter); RSSPeak the process's high-water mark (VmHWM).
	RSS     int64 `json:"rssBytes"`
	RSSPeak int64 `json:"rssPeakBytes"`
	// From the worker's /metrics at the end (0 if it did not answer, or
	// does not export them): Go heap in use, goroutines, the jobs the
	// runner says it holds (analysisfleet_jobs_inflight) and leases held.
	HeapInuse      int64 `json:"heapInuseBytes"`
	Goroutines     int64 `json:"goroutines"`
	WorkerInFlight int64 `json:"workerInFlight"`
	LeasesHeld     int64 `json:"leasesHeld"`
	// LeasesLost and LeasesClaimed are the worker's counters over the
	// phase (leases_lost_total; leases_claimed_total, expired leases it
	// took over, its own included); the Before ones count from the
	// worker's start to the phase (admission, settling).
	LeasesLost          int64 `json:"leasesLost"`
	LeasesClaimed       int64 `json:"leasesClaimed"`
	LeasesLostBefore    int64 `json:"leasesLostBefore"`
	LeasesClaimedBefore int64 `json:"leasesClaimedBefore"`
	// CPU is the worker's user+system time over the phase, in cores.
	CPU float64 `json:"cpuCores"`
	// RedisCommands is the commands Redis executed for the worker per
	// second, in all and by command; those its scripts run count (Redis's
	// commandstats). RedisScripts is the script calls among them;
	// RedisBytesIn and Out the traffic between worker and Redis.
	RedisCommands  float64            `json:"redisCommandsPerSec"`
	RedisScripts   float64            `json:"redisScriptCallsPerSec"`
	RedisByCommand map[string]float64 `json:"redisByCommand,omitempty"`
	RedisBytesIn   float64            `json:"redisBytesInPerSec"`
	RedisBytesOut  float64            `json:"redisBytesOutPerSec"`
	RedisMemory    int64              `json:"redisUsedMemoryBytes"`
	RedisKeys      int64              `json:"redisKeys"`
	RedisCPU       float64            `json:"redisCpuCores"`
	BenchCPU       float64            `json:"benchCpuCores"` // the bench process: simulators, Kafka
	// LoadAvg is the machine's one-minute load average at the end.
	LoadAvg float64 `json:"loadavg1"`
	// CPUSplit is the phase's CPU split from a profile (waiting and window
	// only; CPUSplitError says why there is none).
	CPUSplit      *CPUSplit `json:"cpuSplit,omitempty"`
	CPUSplitError string    `json:"cpuSplitError,omitempty"`
	CPUProfile    string    `json:"cpuProfile,omitempty"` // the profile's file
	SampleDB      Traffic   `json:"sampledb"`
	// Vendors is each vendor simulator's traffic, by vendor.
	Vendors map[string]Traffic `json:"vendors,omitempty"`
}

// Traffic is requests a simulator served, per second.
type Traffic struct {
	Requests float64 `json:"requestsPerSec"`
	// Errors are answers with status 400 or above (429s included).
	Errors   float64 `json:"errorsPerSec"`
	BytesIn  float64 `json:"bytesInPerSec"`
	BytesOut float64 `json:"bytesOutPerSec"`
	// Routes is requests per second by method and path, IDs elided
	// ("GET /sampledb/v2/job/{id}").
	Routes map[string]float64 `json:"routes,omitempty"`
}

// Aborts is the abort-latency sample: from the analyst's DELETE to the
// worker's "aborted" in SampleDB.
type Aborts struct {
	Requested int `json:"requested"`
	Aborted   int `json:"aborted"`
	// Other ended in another terminal state (the abort lost a race);
	// Pending had not ended by the deadline (Config.AbortTimeout).
	Other   int `json:"other"`
	Pending int `json:"pending"`
	// The percentiles are over Aborted and Pending jobs; a pending one
	// counts with the time it was waited for, and a percentile that lands
	// on one is a lower bound (AtLeast).
	P50        float64 `json:"p50Seconds"`
	P50AtLeast bool    `json:"p50AtLeast,omitempty"`
	P99        float64 `json:"p99Seconds"`
	P99AtLeast bool    `json:"p99AtLeast,omitempty"`
	Max        float64 `json:"maxSeconds"`
	MaxAtLeast bool    `json:"maxAtLeast,omitempty"`
}

// run is one run's state.
type run struct {
	cfg   Config
	res   *Result
	start time.Time
	dir   string
	redis *redisServer
	stack *simstack.Stack
	w     *workerProc
	// ids are the jobs submitted; ended those seen ended before the
	// window.
	ids   []string
	ended map[string]bool
}

// Run runs the bench once. Its error is a failure to set up; a worker
// that cannot hold the jobs gives a Result whose Note says why.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &run{cfg: cfg, start: time.Now(), ended: map[string]bool{}}
	b.res = &Result{
		Jobs: cfg.Jobs, Mix: cfg.Mix.String(), Started: map[string]int{},
		Settings: Settings{
			Window: cfg.Window.String(), VendorTime: cfg.VendorTime.String(),
			LeaseTTL: durOr(cfg.LeaseTTL, "worker default"), AbortPollInterval: durOr(cfg.AbortPollInterval, "worker default"),
			MaxInflight: cfg.MaxInflight, RateLimit: cfg.RateLimit, Env: cfg.Env,
		},
	}
	if cfg.Settle > 0 {
		b.res.Settings.Settle = cfg.Settle.String()
	}
	defer func() { b.res.WallSeconds = time.Since(b.start).Seconds() }()
	if err := b.setup(ctx); err != nil {
		b.teardown()
		return nil, err
	}
	b.measure(ctx)
	b.teardown()
	b.res.Warnings = warnings(b.res.Log)
	return b.res, nil
}

func durOr(d time.Duration, dflt string) string {
	if d == 0 {
		return dflt
	}
	return d.String()
}

func (b *run) progressf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench N=%d %6.1fs  %s\n", b.cfg.Jobs, time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// teardown stops what setup started, the worker first (it is the one
// that talks to the others).
func (b *run) teardown() {
	if b.w != nil {
		b.w.stop(time.Minute)
	}
	if b.stack != nil {
		b.stack.Close()
	}
	if b.redis != nil {
		b.redis.stop()
	}
}

func (b *run) setup(ctx context.Context) error {
	dir := b.cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "analysisfleet-bench-")
		if err != nil {
			return err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b.dir = dir
	r, err := startRedis(ctx, b.cfg.RedisServer, dir)
	if err != nil {
		return err
	}
	b.redis = r
	vt := b.cfg.VendorTime
	b.stack, err = simstack.Start(simstack.Config{Timing: simstack.Timing{
		CBCQueued: time.Second, CBCRun: vt,
		SophosPending: time.Second, SophosRun: vt, SophosMinPoll: 500 * time.Millisecond,
		CBLRCheckIn: time.Second, CBLRCommand: vt,
		CytomicAnswerMin: vt, CytomicAnswerMax: vt,
	}})
	if err != nil {
		return err
	}
	return nil
}

// workerEnv is the worker's configuration: the simulators' environment
// with only the mix's vendors, the bench's Kafka and Redis, the knobs.
func (b *run) workerEnv(brokers []string, httpAddr, debugAddr, playbook string) map[string]string {
	env := b.stack.Env()
	used := b.cfg.Mix.vendors()
	for v, p := range envPrefix {
		if slices.Contains(used, v) {
			continue
		}
		for k := range env {
			if strings.HasPrefix(k, p) {
				delete(env, k)
			}
		}
	}
	env["KAFKA_BROKERS"] = strings.Join(brokers, ",")
	env["REDIS_URL"] = b.redis.url()
	env["WORKER_ID"] = "bench-worker"
	env["HTTP_ADDR"] = httpAddr
	env["DEBUG_ADDR"] = debugAddr // the window's CPU profile (CPUSplit)
	env["MAX_INFLIGHT"] = strconv.Itoa(b.cfg.MaxInflight)
	env["PLAYBOOK_FILE"] = playbook
	env["LOG_LEVEL"] = "info"
	if b.cfg.LeaseTTL > 0 {
		env["LEASE_TTL"] = b.cfg.LeaseTTL.String()
	}
	if b.cfg.AbortPollInterval > 0 {
		env["ABORT_POLL_INTERVAL"] = b.cfg.AbortPollInterval.String()
	}
	for _, v := range used {
		env[strings.ToUpper(v)+"_RATE_LIMIT"] = strconv.FormatFloat(b.cfg.RateLimit, 'f', -1, 64)
	}
	for k, v := range b.cfg.Env {
		env[k] = v
	}
	return env
}

// measure runs the phases; whatever stops it is written in the Result.
func (b *run) measure(ctx context.Context) {
	res := b.res
	kc, err := kfake.NewCluster(
		kfake.SeedTopics(6, append(append([]string{}, intake.DefaultTopics...), intake.DefaultDLQTopic, results.DefaultTopic)...),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4194304"}),
	)
	if err != nil {
		res.Note = fmt.Sprintf("start kfake: %v", err)
		return
	}
	defer kc.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		res.Note = fmt.Sprintf("Kafka producer: %v", err)
		return
	}
	defer prod.Close()

	playbook := filepath.Join(b.dir, "playbook.json")
	if err := os.WriteFile(playbook, b.cfg.Mix.playbook(), 0o600); err != nil {
		res.Note = err.Error()
		return
	}
	addr, err := freeAddr()
	if err != nil {
		res.Note = err.Error()
		return
	}
	debugAddr, err := freeAddr()
	if err != nil {
		res.Note = err.Error()
		return
	}
	res.Log = filepath.Join(b.dir, fmt.Sprintf("worker-%d.log", b.cfg.Jobs))
	env := b.workerEnv(kc.ListenAddrs(), addr, debugAddr, playbook)
	b.w, err = startWorker(b.cfg.WorkerCommand, env, res.Log, addr)
	if err != nil {
		res.Note = err.Error()
		return
	}
	defer b.w.stop(time.Minute) // before kfake closes under it
	if err := b.w.waitReady(ctx, time.Minute); err != nil {
		res.Note = err.Error()
		return
	}
	b.progressf("worker ready (pid %d); idle for %s", b.w.pid(), b.cfg.Idle)

	idle, ok := b.phase(ctx, b.cfg.Idle, nil)
	if !ok {
		return
	}
	res.Idle = idle

	b.progressf("submitting %d jobs (%s)", b.cfg.Jobs, res.Mix)
	ids, first, err := b.submit(ctx, prod)
	if err != nil {
		res.Note = err.Error()
		return
	}
	b.ids = ids
	steady, proceed := b.admit(ctx, first)
	if !proceed {
		return
	}
	if steady && b.cfg.Settle > 0 {
		b.progressf("steady; settling for %s", b.cfg.Settle)
		if !b.wait(ctx, b.cfg.Settle) {
			return
		}
	}
	if b.cfg.Waiting > 0 {
		b.progressf("measuring waiting only for %s (%d in flight)", b.cfg.Waiting, res.InFlight)
		wait, ok := b.profiledPhase(ctx, "waiting", b.cfg.Waiting, debugAddr, nil)
		if !ok {
			return
		}
		res.Waiting = &wait
	}
	b.progressf("measuring for %s (%d in flight, %d aborts)", b.cfg.Window, res.InFlight, min(b.cfg.Aborts, res.InFlight))
	victims := b.victims()
	var aborted map[string]time.Time
	win, ok := b.profiledPhase(ctx, "window", b.cfg.Window, debugAddr, func(ctx context.Context, start time.Time) {
		aborted = b.abortDuring(ctx, start, victims)
	})
	if !ok {
		return
	}
	res.Window = &win
	if held := cmp.Or(win.WorkerInFlight, int64(res.InFlight)); held > 0 {
		res.RSSPerJob = (win.RSS - res.Idle.RSS) / held
		res.RedisBytesPerJob = (win.RedisMemory - res.Idle.RedisMemory) / held
	}
	if len(aborted) > 0 {
		res.Aborts = b.awaitAborts(ctx, aborted)
	}
}
