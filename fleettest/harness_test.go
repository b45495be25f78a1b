package fleettest

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
	"github.com/analysisfleet/analysisfleet/state"
)

var (
	soak    = flag.Bool("soak", false, "run the 10-minute soak (TestSoak)")
	binDir  string
	workerB string
	brokerB string
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "fleettest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	testenv.OnExit(func() { os.RemoveAll(dir) })
	workerB, brokerB = filepath.Join(dir, "worker"), filepath.Join(dir, "kafkabroker")
	for out, pkg := range map[string]string{workerB: "./cmd/worker", brokerB: "./cmd/kafkabroker"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = ".."
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "fleettest: building %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	testenv.Main(m)
}

// proc is one child process; its output goes to a log file in the test's
// directory.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error
	started time.Time
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.exited
}

// rssKiB reads the resident set size from /proc.
func (p *proc) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// startProc runs bin with args and exactly env (plus PATH/HOME/TMPDIR). If
// ready is not empty it waits for a stdout line starting with ready and
// returns the rest of it. Safe to call from any goroutine.
func startProc(t *testing.T, dir, name, bin string, args []string, env map[string]string, ready string) (*proc, string, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{}), started: time.Now()}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && ready != "" && strings.HasPrefix(line, ready) {
				lines <- strings.TrimPrefix(line, ready)
				sent = true
				continue
			}
			fmt.Fprintln(logf, line)
		}
		_, _ = io.Copy(logf, stdout)
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.alive() {
			p.signal(syscall.SIGCONT)
			p.kill()
		}
	})
	if ready == "" {
		return p, "", nil
	}
	select {
	case rest := <-lines:
		return p, rest, nil
	case <-p.exited:
		return nil, "", fmt.Errorf("%s exited before it was ready: %v (log %s)\n%s", name, p.err, logPath, tail(logPath, 20))
	case <-time.After(60 * time.Second):
		p.kill()
		return nil, "", fmt.Errorf("%s not ready after 60s (log %s)", name, logPath)
	}
}

// countInLogs counts lines containing needle in the logs matching glob.
func countInLogs(dir, glob, needle string) int {
	files, _ := filepath.Glob(filepath.Join(dir, glob))
	n := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		n += strings.Count(string(b), needle)
	}
	return n
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func pickPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type clusterOpts struct {
	workers    int
	leaseTTL   time.Duration
	failpoints string // ANALYSISFLEET_FAILPOINTS for every worker process
	// failpointsOnce arms, per worker start (1st, 2nd, …), one process with
	// a failpoint spec: each window is hit without every restarted process
	// dying again.
	failpointsOnce []string
	env            map[string]string // extra worker environment
	simArgs        []string          // extra `worker sim` flags
	brokerLog      string            // kafkabroker --log-level
}

// cluster is one test's fleet of processes.
type cluster struct {
	t       *testing.T
	dir     string
	opts    clusterOpts
	sock    string
	redis   *proc
	rdb     *redis.Client
	store   *state.Store
	ns      string
	ports   string
	brokers []string
	broker  *proc
	sims    *proc
	simEnv  map[string]string
	prod    *kgo.Client

	mu      sync.Mutex
	workers map[string]*worker
	gone    []*worker // workers that stopped (their logs are still read)
	starts  int
	faults  []faultEvent
	leases  []state.LeaseEvent
	lastID  string
	readMu  sync.Mutex // one lease-history reader at a time
	stopLog chan struct{}
	logDone chan struct{}
}

type worker struct {
	id   string
	proc *proc
	http string
}

type faultEvent struct {
	At     time.Time
	Kind   string
	Target string
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	if o.workers == 0 {
		o.workers = 3
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = 3 * time.Second
	}
	dir, err := os.MkdirTemp("", "fleettest-"+t.Name()+"-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FLEETTEST_KEEP") != "" {
			t.Logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	c := &cluster{t: t, dir: dir, opts: o, sock: filepath.Join(dir, "redis.sock"), ns: "fleet",
		workers: map[string]*worker{}, stopLog: make(chan struct{}), logDone: make(chan struct{})}
	c.startRedis()
	c.rdb = redis.NewClient(&redis.Options{Network: "unix", Addr: c.sock, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { c.rdb.Close() })
	st, err := state.New(c.rdb, state.Config{Namespace: c.ns, LeaseTTL: o.leaseTTL})
	require.NoError(t, err)
	c.store = st

	c.ports = "0,0,0"
	c.startBroker()
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ProducerBatchMaxBytes(4<<20),
		kgo.RecordDeliveryTimeout(2*time.Minute), kgo.RequestRetries(1000))
	require.NoError(t, err)
	c.prod = prod
	t.Cleanup(prod.Close)

	simArgs := append([]string{"sim", "--sampledb-port", "0", "--cbc-port", "0", "--cblr-port", "0", "--cytomic-port", "0", "--sophos-port", "0"}, o.simArgs...)
	sims, envJSON, err := startProc(t, dir, "sims", workerB, simArgs, nil, "READY ")
	require.NoError(t, err)
	c.sims = sims
	require.NoError(t, json.Unmarshal([]byte(envJSON), &c.simEnv))

	go c.followLeases()
	t.Cleanup(func() {
		close(c.stopLog)
		<-c.logDone
	})
	for i := range o.workers {
		c.startWorker(fmt.Sprintf("w%d", i+1))
	}
	return c
}

func (c *cluster) startRedis() {
	p, _, err := startProc(c.t, c.dir, "redis", "redis-server",
		[]string{"--port", "0", "--unixsocket", c.sock, "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
			"--dir", c.dir, "--maxmemory-policy", "noeviction"}, nil, "")
	require.NoError(c.t, err)
	c.redis = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl := redis.NewClient(&redis.Options{Network: "unix", Addr: c.sock, MaxRetries: -1})
		err := cl.Ping(context.Background()).Err()
		cl.Close()
		if err == nil {
			return
		}
		require.True(c.t, time.Now().Before(deadline), "redis-server did not start: %v", err)
		nextCheck(20 * time.Millisecond)
	}
}

// nextCheck paces a loop that polls a condition until its deadline (every
// such loop in this file has one): the condition is what it waits for.
func nextCheck(every time.Duration) { <-time.After(every) }

// restartRedisEmpty kills Redis and starts it again with no data, as a
// restart without persistence does.
func (c *cluster) restartRedisEmpty() {
	c.fault("redis restarted empty", "redis")
	c.redis.kill()
	c.startRedis()
}

func (c *cluster) startBroker() {
	p, addrs, err := startProc(c.t, c.dir, "kafkabroker", brokerB,
		[]string{"--ports", c.ports, "--data-dir", filepath.Join(c.dir, "kafka"), "--partitions", "6",
			"--log-level", cmp.Or(c.opts.brokerLog, "none")}, nil, "READY ")
	require.NoError(c.t, err)
	c.broker = p
	got := strings.Split(strings.TrimSpace(addrs), ",")
	if c.brokers != nil {
		// A restart comes back on the same ports; c.brokers is read by the
		// supervisor's goroutines and is not written again.
		require.Equal(c.t, c.brokers, got, "the restarted broker listens where it did")
		return
	}
	c.brokers = got
	var ports []string
	for _, a := range c.brokers {
		_, port, _ := net.SplitHostPort(a)
		ports = append(ports, port)
	}
	c.ports = strings.Join(ports, ",")
}

func (c *cluster) restartBroker(sig syscall.Signal) {
	c.fault("broker restarted ("+sig.String()+")", "kafkabroker")
	c.broker.signal(sig)
	<-c.broker.exited
	c.startBroker()
}

func (c *cluster) workerEnv(id string, port int) map[string]string {
	env := map[string]string{}
	for k, v := range c.simEnv {
		env[k] = v
	}
	for k, v := range map[string]string{
		"KAFKA_BROKERS":            strings.Join(c.brokers, ","),
		"KAFKA_SESSION_TIMEOUT":    "6s",
		"KAFKA_REBALANCE_TIMEOUT":  "3s",
		"KAFKA_HEARTBEAT_INTERVAL": "300ms",
		"REDIS_URL":                "unix://" + c.sock,
		"REDIS_NAMESPACE":          c.ns,
		"WORKER_ID":                id,
		"HTTP_ADDR":                fmt.Sprintf("127.0.0.1:%d", port),
		"LEASE_TTL":                c.opts.leaseTTL.String(),
		"ABORT_POLL_INTERVAL":      "500ms",
		"POLL_INTERVAL_MIN":        "200ms",
		"POLL_INTERVAL_MAX":        "1s",
		"CLAIM_INTERVAL":           "200ms",
		"RETRY_BACKOFF_MIN":        "100ms",
		"RETRY_BACKOFF_MAX":        "1s",
		"RECONCILE_INTERVAL":       "5s",
		"DRAIN_TIMEOUT":            "5s",
		"MAX_INFLIGHT":             "1000",
		"CYTOMIC_ROUND":            "500ms",
		"SOPHOS_POLL_INTERVAL":     "500ms",
		"CBLR_POLL_INTERVAL":       "300ms",
		"CBC_RATE_LIMIT":           "500", "CBLR_RATE_LIMIT": "500", "CYTOMIC_RATE_LIMIT": "500", "SOPHOS_RATE_LIMIT": "500",
		"CBC_RATE_BURST": "50", "CBLR_RATE_BURST": "50", "CYTOMIC_RATE_BURST": "50", "SOPHOS_RATE_BURST": "50",
		"LOG_LEVEL": "info",
	} {
		env[k] = v
	}
	if c.opts.failpoints != "" {
		env["ANALYSISFLEET_FAILPOINTS"] = c.opts.failpoints
	}
	c.mu.Lock()
	n := c.starts
	c.mu.Unlock()
	if n >= 1 && n <= len(c.opts.failpointsOnce) {
		env["ANALYSISFLEET_FAILPOINTS"] = c.opts.failpointsOnce[n-1]
	}
	for k, v := range c.opts.env {
		env[k] = v
	}
	return env
}

// startWorker starts (or restarts) worker id and waits until /readyz says so.
func (c *cluster) startWorker(id string) *worker {
	c.t.Helper()
	w, err := c.tryStartWorker(id)
	require.NoError(c.t, err)
	return w
}

// tryStartWorker is startWorker for goroutines other than the test's.
func (c *cluster) tryStartWorker(id string) (*worker, error) {
	port, err := pickPort()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.starts++
	logName := fmt.Sprintf("%s.%d", id, c.starts)
	c.mu.Unlock()
	p, _, err := startProc(c.t, c.dir, logName, workerB, []string{"run"}, c.workerEnv(id, port), "")
	if err != nil {
		return nil, err
	}
	w := &worker{id: id, proc: p, http: fmt.Sprintf("127.0.0.1:%d", port)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + w.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if !p.alive() {
			return nil, fmt.Errorf("worker %s exited at start: %v\n%s", id, p.err, tail(p.logPath, 20))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("worker %s not ready after 60s", id)
		}
		nextCheck(50 * time.Millisecond)
	}
	c.mu.Lock()
	if old := c.workers[id]; old != nil {
		c.gone = append(c.gone, old)
	}
	c.workers[id] = w
	c.mu.Unlock()
	return w, nil
}

func (c *cluster) worker(id string) *worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[id]
}

func (c *cluster) liveWorkers() []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*worker
	for _, w := range c.workers {
		if w.proc.alive() {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (c *cluster) fault(kind, target string) {
	c.mu.Lock()
	c.faults = append(c.faults, faultEvent{At: time.Now(), Kind: kind, Target: target})
	c.mu.Unlock()
}

// kill9 kills a worker as a crash would.
func (c *cluster) kill9(id string) {
	w := c.worker(id)
	c.fault("kill -9", id)
	w.proc.kill()
}

// followLeases reads the ledger's lease history while the test runs, so the
// history survives a Redis restart (events after the last read before a
// wipe are lost, and the checker then makes no claim about them).
func (c *cluster) followLeases() {
	defer close(c.logDone)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		c.readLeases()
		select {
		case <-c.stopLog:
			c.readLeases()
			return
		case <-t.C:
		}
	}
}

func (c *cluster) readLeases() {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		evs, next, err := c.store.LeaseHistory(ctx, c.lastID, 5000)
		cancel()
		if err != nil || len(evs) == 0 {
			return
		}
		c.mu.Lock()
		c.leases = append(c.leases, evs...)
		c.lastID = next
		c.mu.Unlock()
	}
}

// load submits jobs and returns what was produced.
func (c *cluster) load(ctx context.Context, cfg loadgen.Config) *loadgen.Stats {
	c.t.Helper()
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{testutil.TopicOSL, testutil.TopicSVG}
	}
	if cfg.Sensors == nil {
		cfg.Sensors = []int64{1, 2, 3}
		cfg.KnownSample, cfg.KnownPath = cblr.DefaultSampleSHA256(), cblr.DefaultSamplePath
	}
	if cfg.AbortAfter == 0 {
		cfg.AbortAfter = 1500 * time.Millisecond
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	sdb := &loadgen.HTTPSampleDB{URL: c.simEnv["SAMPLEDB_URL"], UserKey: simstack.UserKey}
	st, err := loadgen.Run(ctx, cfg, sdb, c.prod, 1<<20)
	require.NoError(c.t, err)
	return st
}

// waitTerminal waits until every job is terminal in SampleDB, or fails
// after within, listing a few stragglers.
func (c *cluster) waitTerminal(ids []string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		jobs := c.simJobs()
		var open []string
		for _, id := range ids {
			if j, ok := jobs[id]; !ok || !sampledb.IsTerminal(j.State) {
				open = append(open, id)
			}
		}
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			states := map[string]int{}
			for _, id := range open {
				states[jobs[id].State]++
			}
			for _, id := range open[:min(3, len(open))] {
				rec, err := c.store.Get(context.Background(), id)
				if rec != nil {
					c.t.Logf("stuck %s (%s): owner %q token %d source %s fields %v", id, jobs[id].State, rec.Owner, rec.Token, rec.Source, rec.Fields)
				} else {
					tomb, ok, _ := c.store.Tombstone(context.Background(), id)
					c.t.Logf("stuck %s (%s): no ledger record (err %v), tombstone %q %v", id, jobs[id].State, err, tomb, ok)
				}
			}
			c.t.Fatalf("%d of %d jobs not terminal after %s: by SampleDB state %v", len(open), len(ids), within, states)
		}
		nextCheck(200 * time.Millisecond)
	}
}

func (c *cluster) getJSON(base, path string, out any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	require.Equal(c.t, http.StatusOK, resp.StatusCode, "GET %s%s", base, path)
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(out))
}

// addFault switches a fault on in a simulator over HTTP.
func (c *cluster) addFault(sim string, f map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(f)
	resp, err := http.Post(c.simURL(sim)+"/_sim/faults", "application/json", strings.NewReader(string(b)))
	require.NoError(c.t, err)
	resp.Body.Close()
	require.Equal(c.t, http.StatusCreated, resp.StatusCode)
	c.fault(fmt.Sprintf("%v", f["name"]), sim)
}

func (c *cluster) simURL(sim string) string {
	return map[string]string{
		"sampledb": c.simEnv["SAMPLEDB_URL"], "cbc": c.simEnv["CBC_URL"], "cblr": c.simEnv["CBLR_URL"],
		"cytomic": c.simEnv["CYTOMIC_URL"], "sophos": c.simEnv["SOPHOS_URL"],
	}[sim]
}

// supervise restarts dead workers after a pause, as Kubernetes would (its
// crash back-off starts at 10s), until the returned stop is called (at the
// latest when the test ends).
func (c *cluster) supervise(after time.Duration) (stop func()) {
	var wg sync.WaitGroup
	quit := make(chan struct{})
	var once sync.Once
	stop = func() {
		once.Do(func() { close(quit) })
		wg.Wait()
	}
	c.t.Cleanup(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		dead := map[string]time.Time{}
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			c.mu.Lock()
			var restart []string
			for id, w := range c.workers {
				if w.proc.alive() {
					delete(dead, id)
					continue
				}
				if _, ok := dead[id]; !ok {
					dead[id] = time.Now()
				}
				if time.Since(dead[id]) >= after {
					restart = append(restart, id)
				}
			}
			c.mu.Unlock()
			for _, id := range restart {
				select {
				case <-quit:
					return
				default:
				}
				if _, err := c.tryStartWorker(id); err != nil {
					c.t.Errorf("supervisor: %v", err)
					return
				}
				delete(dead, id)
			}
		}
	}()
	return stop
}

// restartAfter is how long the supervisor waits before restarting a dead
// worker: the group session timeout plus the rebalance timeout, so the
// broker has dropped the dead member first (kfake, unlike Kafka, keeps a
// dead member until a rebalance completes, and every new join restarts that
// rebalance).
const restartAfter = 14 * time.Second

// stop pauses a worker (SIGSTOP) for d, then resumes it.
func (c *cluster) pause(id string, d time.Duration) {
	w := c.worker(id)
	c.fault("SIGSTOP", id)
	w.proc.signal(syscall.SIGSTOP)
	<-time.After(d) // the fault's duration
	w.proc.signal(syscall.SIGCONT)
	c.fault("SIGCONT", id)
}

// drain sends SIGTERM and waits for the worker to exit.
func (c *cluster) drain(id string) (time.Duration, error) {
	w := c.worker(id)
	c.fault("SIGTERM", id)
	start := time.Now()
	w.proc.signal(syscall.SIGTERM)
	select {
	case <-w.proc.exited:
		return time.Since(start), w.proc.err
	case <-time.After(60 * time.Second):
		return time.Since(start), fmt.Errorf("%s did not exit within 60s of SIGTERM", id)
	}
}

// heldBy returns the jobs whose last lease event is an acquisition by
// worker, per the lease history read so far.
func (c *cluster) heldBy(worker string) []string {
	c.readLeases()
	c.mu.Lock()
	defer c.mu.Unlock()
	last := map[string]state.LeaseEvent{}
	for _, e := range c.leases {
		last[e.JobID] = e
	}
	var out []string
	for id, e := range last {
		if isAcquisition(e.Event) && e.Worker == worker {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// vendorStartsFor counts vendor operations started for the given jobs.
func (c *cluster) vendorStartsFor(jobs []string) int {
	want := map[string]bool{}
	for _, j := range jobs {
		want[j] = true
	}
	n := 0
	for sim, isStart := range startPaths {
		var reqs []simhttp.Request
		c.getJSON(c.simURL(sim), "/_sim/requests", &reqs)
		for _, q := range reqs {
			if want[q.Job] && isStart(q.Method, q.Path) {
				n++
			}
		}
	}
	return n
}

// deadLetters counts the dead letters by reason, reading the DLQ topic to
// its current end.
func (c *cluster) deadLetters() map[string]int {
	c.t.Helper()
	out := map[string]int{}
	recs := testutil.ReadToEnd(testutil.Context(c.t, 30*time.Second), c.t, []kgo.Opt{kgo.SeedBrokers(c.brokers...)}, testutil.TopicDLQ)
	for _, r := range recs {
		if reason := testutil.Header(r, intake.HeaderReason); reason != "" {
			out[reason]++
		}
	}
	return out
}
