//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

// `worker run` with nothing listening at REDIS_URL says so once, at ERROR,
// with the address and the cause, and none of go-redis's own pool lines;
// when Redis answers it says so and starts; and a Kafka that does not
// answer is said the same way, naming the brokers.
func TestRunSaysWhenRedisAndKafkaAreUnreachable(t *testing.T) {
	t.Parallel()
	redis, kafka := closedAddr(t), closedAddr(t)
	redisAddr, kafkaAddr := redis.addr, kafka.addr
	env := baseEnv()
	env["KAFKA_BROKERS"] = kafkaAddr
	env["REDIS_URL"] = "redis://" + redisAddr + "/0"
	env["REDIS_NAMESPACE"] = testenv.Namespace(t)
	env["SAMPLEDB_URL"] = "http://" + closedAddr(t).addr
	env["INSECURE_HTTP"] = "true"
	env["HTTP_ADDR"] = "127.0.0.1:0"
	env["WORKER_ID"] = "reach-test"
	w := startChild(t, env, "run")

	var first []string
	require.Eventually(t, func() bool {
		first = w.logs("error", "redis unreachable: ")
		return len(first) > 0
	}, 30*time.Second, 20*time.Millisecond)
	require.True(t, strings.HasPrefix(first[0], "redis unreachable: "+redisAddr+" — dial tcp "), first[0])
	require.Contains(t, first[0], "connection refused")
	require.True(t, strings.HasSuffix(first[0], "; retrying"), first[0])

	proxy(t, redis, testenv.Redis(t).Socket)
	require.Eventually(t, func() bool {
		return len(w.logs("info", "redis reachable again after ")) == 1
	}, 30*time.Second, 20*time.Millisecond)
	require.Len(t, w.logs("error", "redis unreachable: "), 1, "said once: the retries before Redis answered are not repeated")

	require.Eventually(t, func() bool {
		m := w.logs("error", "kafka unreachable: brokers "+kafkaAddr+" — ")
		return len(m) == 1 && strings.Contains(m[0], "connection refused")
	}, 30*time.Second, 20*time.Millisecond)

	require.NoError(t, w.stop(t, syscall.SIGTERM))
	for _, l := range w.errLines() {
		require.NotContains(t, l, "connection pool", "go-redis's pool chatter stays out of the log")
		require.NotContains(t, l, "s3cr3t")
	}
}

// heldPort is a loopback port that refuses connections and stays this
// test's: a socket bound to it, not listening, and without SO_REUSEADDR, so
// no other process (another test's broker, a child's listener) can take the
// port while the test holds it, as one could a port closed and given back.
type heldPort struct {
	fd   int
	addr string
}

// closedAddr holds a loopback port nothing listens on until the test ends
// (or proxy listens on it).
func closedAddr(t *testing.T) *heldPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	h := &heldPort{fd: fd, addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(sa.(*syscall.SockaddrInet4).Port))}
	t.Cleanup(func() { h.close() })
	return h
}

func (h *heldPort) close() {
	if h.fd >= 0 {
		syscall.Close(h.fd)
		h.fd = -1
	}
}

// listen turns the held port into a listener on the same socket: the port is
// never free in between.
func (h *heldPort) listen(t *testing.T) net.Listener {
	t.Helper()
	require.NoError(t, syscall.Listen(h.fd, 128))
	f := os.NewFile(uintptr(h.fd), h.addr)
	h.fd = -1
	defer f.Close()
	ln, err := net.FileListener(f) // a duplicate of the socket
	require.NoError(t, err)
	return ln
}

// proxy listens on the held port and forwards its TCP connections to the
// unix socket sock until the test ends.
func proxy(t *testing.T, h *heldPort, sock string) {
	t.Helper()
	ln := h.listen(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", sock)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}
