// Package testenv gives tests real services: a private redis-server per test
// binary (on a unix socket in a temporary directory, so parallel packages
// never share state or fight over ports) with a fresh key namespace per test,
// a local three-master Redis Cluster per test binary on loopback ports for
// tests that need one (RedisClusterClient), and a goroutine-leak check
// around the whole run. Tests only.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

var (
	sharedRedis = shared[*RedisServer]{start: StartRedis}
	cleanupMu   sync.Mutex // the shared server and cluster start concurrently
	cleanup     []func()
)

// shared is a server the test binary starts on first use (get) and stops
// after its tests (OnExit).
type shared[S interface{ Stop() }] struct {
	start func() (S, error)
	once  sync.Once
	srv   S
	err   error
}

// get returns the server, starting it on first use; t fails when it could
// not start.
func (s *shared[S]) get(t testing.TB) S {
	t.Helper()
	s.once.Do(func() {
		s.srv, s.err = s.start()
		if s.err == nil {
			OnExit(s.srv.Stop)
		}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.srv
}

// OnExit registers fn to run after the package's tests (before the leak
// check). Call it from TestMain before Main.
func OnExit(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanup = append(cleanup, fn)
}

// Main runs the package's tests, stops what they started, and fails the run
// if goroutines leaked. Use it as TestMain's body: `testenv.Main(m)`.
func Main(m *testing.M, opts ...goleak.Option) {
	// Tests cut Redis off on purpose; go-redis's own dial-failure lines
	// would only bury the test output.
	redis.SetLogger(quietLogger{})
	code := m.Run()
	cleanupMu.Lock()
	fns := cleanup
	cleanupMu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	if code == 0 {
		opts = append(opts,
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/maintnotifications.(*poolHook).processNotifications"),
			// After PoolSize failed dials (the tests that cut Redis off),
			// go-redis probes in the background, and that goroutine notices
			// the pool closed only after its next one-second pause.
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		)
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// RedisServer is a redis-server process started for tests.
type RedisServer struct {
	Socket string
	cmd    *exec.Cmd
	dir    string
}

// URL returns the server's REDIS_URL.
func (r *RedisServer) URL() string { return "unix://" + r.Socket }

// StartRedis starts a redis-server on a unix socket in a fresh directory,
// without persistence, and waits until it answers PING.
func StartRedis() (*RedisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("testenv: redis-server not found on PATH (install the Debian package redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "af-redis-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: start redis-server: %w", err)
	}
	r := &RedisServer{Socket: sock, cmd: cmd, dir: dir}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("testenv: redis-server did not answer: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and removes its directory.
func (r *RedisServer) Stop() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
	os.RemoveAll(r.dir)
}

// Redis returns the test binary's shared redis-server, starting it on first
// use (it is stopped by Main).
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return sharedRedis.get(t)
}

// RedisClient returns a client to the shared test server and a namespace no
// other test uses. The client is closed when the test ends.
func RedisClient(t testing.TB) (*redis.Client, string) {
	t.Helper()
	r := Redis(t)
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: r.Socket, PoolSize: 32})
	t.Cleanup(func() { c.Close() })
	return c, Namespace(t)
}

// Namespace returns a fresh, unique fleet namespace.
func Namespace(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
