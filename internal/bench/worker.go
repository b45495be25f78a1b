package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// workerProc is the worker under measurement: a child process the bench
// started, logging to a file.
type workerProc struct {
	cmd      *exec.Cmd
	addr     string
	logPath  string
	done     chan struct{}
	err      error // cmd.Wait's, once done is closed
	stopOnce sync.Once
	http     *http.Client
}

// passEnv are the bench's own variables a worker inherits: the Go
// runtime's knobs and what a process needs to run. Nothing else leaks in
// (a REDIS_URL in the caller's environment must not reach the worker).
var passEnv = []string{"PATH", "HOME", "TMPDIR", "LANG", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG", "GOTRACEBACK", "GORACE"}

func startWorker(argv []string, env map[string]string, logPath, addr string) (*workerProc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start the worker: %w", err)
	}
	w := &workerProc{cmd: cmd, addr: addr, logPath: logPath, done: make(chan struct{}),
		http: &http.Client{Timeout: 5 * time.Second}}
	go func() {
		defer close(w.done)
		w.err = cmd.Wait()
		f.Close()
	}()
	return w, nil
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// stop asks the worker to drain (SIGTERM) and kills it if it has not
// exited after grace. Safe to call twice.
func (w *workerProc) stop(grace time.Duration) {
	w.stopOnce.Do(func() {
		select {
		case <-w.done:
			return
		default:
		}
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-w.done:
		case <-t.C:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
}

// exited describes a worker that has exited, with its log's last lines.
func (w *workerProc) exited() string {
	return fmt.Sprintf("the worker exited (%v); the end of its log (%s):\n%s", w.err, w.logPath, tail(w.logPath, 8))
}

// waitReady waits until /readyz answers 200.
func (w *workerProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := w.http.Get("http://" + w.addr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-w.done:
			return errors.New(w.exited())
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for the worker: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("the worker was not ready after %s (log: %s)", timeout, w.logPath)
		case <-tick.C:
		}
	}
}

// workerMetrics are the figures the bench reads from the worker's
// /metrics: the Go runtime's, and the runner's own where it exports them
// (absent ones read 0).
type workerMetrics struct {
	ok                    bool
	goroutines, heapInuse int64
	inflight, leasesHeld  int64
	leasesLost, takenOver int64 // counters, summed over their labels
}

// metricNames maps the series read to the field they fill.
var metricNames = map[string]func(m *workerMetrics) *int64{
	"go_goroutines":                      func(m *workerMetrics) *int64 { return &m.goroutines },
	"go_memstats_heap_inuse_bytes":       func(m *workerMetrics) *int64 { return &m.heapInuse },
	"analysisfleet_jobs_inflight":        func(m *workerMetrics) *int64 { return &m.inflight },
	"analysisfleet_leases_held":          func(m *workerMetrics) *int64 { return &m.leasesHeld },
	"analysisfleet_leases_lost_total":    func(m *workerMetrics) *int64 { return &m.leasesLost },
	"analysisfleet_leases_claimed_total": func(m *workerMetrics) *int64 { return &m.takenOver },
}

// metrics reads the worker's /metrics; ok is false if it did not answer.
func (w *workerProc) metrics() workerMetrics {
	resp, err := w.http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		return workerMetrics{}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return workerMetrics{}
	}
	m := parseMetrics(resp.Body)
	return m
}

// parseMetrics reads the Prometheus text format: each series in
// metricNames, summed over its label sets.
func parseMetrics(r io.Reader) workerMetrics {
	m := workerMetrics{ok: true}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		field, ok := metricNames[strings.TrimSpace(name)]
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		*field(&m) += int64(f)
	}
	return m
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// warnings counts the log's lines at warn level or above, by message (the
// worker logs JSON lines; a line that is not JSON, a panic say, counts as
// "(not JSON)").
func warnings(path string) map[string]int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) != nil {
			out["(not JSON)"]++
			continue
		}
		switch e.Level {
		case "warn", "error", "dpanic", "panic", "fatal":
			out[e.Level+": "+e.Msg]++
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// topN returns the n largest entries of m as "key n" strings, largest
// first.
func topN[V int | int64 | float64](m map[string]V, n int, format func(V) string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > n {
		keys = keys[:n]
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + " " + format(m[k])
	}
	return out
}
