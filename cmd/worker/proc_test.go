package main

// Tests that run the real worker binary (built once, on first use) as a
// child process and read what it prints, as a user would.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// workerBinary builds ./cmd/worker once per test binary.
func workerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "worker-bin-")
		if err != nil {
			binErr = err
			return
		}
		testenv.OnExit(func() { os.RemoveAll(dir) })
		binPath = filepath.Join(dir, "worker")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/worker: %v\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

// child is a running worker process whose stdout and stderr lines are
// collected as they come.
type child struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	stdout  []string
	stderr  []string
	readers sync.WaitGroup
	exited  chan struct{}
	err     error
}

// startChild runs the worker binary with args and exactly env (plus PATH
// and HOME), and stops it (SIGINT, then SIGKILL) when the test ends.
func startChild(t *testing.T, env map[string]string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(workerBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	outR, err := cmd.StdoutPipe()
	require.NoError(t, err)
	errR, err := cmd.StderrPipe()
	require.NoError(t, err)
	c := &child{cmd: cmd, exited: make(chan struct{})}
	require.NoError(t, cmd.Start())
	collect := func(r io.Reader, into *[]string) {
		defer c.readers.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			*into = append(*into, sc.Text())
			c.mu.Unlock()
		}
	}
	c.readers.Add(2)
	go collect(outR, &c.stdout)
	go collect(errR, &c.stderr)
	go func() {
		c.readers.Wait() // Wait closes the pipes: read them to the end first
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.stop(t, syscall.SIGINT)
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", c.out(), strings.Join(c.errLines(), "\n"))
		}
	})
	return c
}

func (c *child) out() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.stdout, "\n")
}

func (c *child) errLines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string{}, c.stderr...)
}

// stop signals the process and waits for it to exit (SIGKILL after 30s).
func (c *child) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.err
	default:
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		t.Errorf("%s did not exit within 30s of %v", c.cmd.Path, sig)
	}
	return c.err
}

// logLine is one JSON log line of `worker run`.
type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

// logs returns the JSON log lines on stderr at level whose message starts
// with prefix.
func (c *child) logs(level, prefix string) []string {
	var out []string
	for _, l := range c.errLines() {
		var e logLine
		if json.Unmarshal([]byte(l), &e) == nil && e.Level == level && strings.HasPrefix(e.Msg, prefix) {
			out = append(out, e.Msg)
		}
	}
	return out
}
