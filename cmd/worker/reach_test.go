//go:build linux

package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

// `worker run` with nothing listening at REDIS_URL says so once, at ERROR,
// with the address and the cause, and none of go-redis's own pool lines;
// when Redis answers it says so and starts; and a Kafka that does not
// answer is said the same way, naming the brokers.
func TestRunSaysWhenRedisAndKafkaAreUnreachable(t *testing.T) {
	t.Parallel()
	redis, kafka := testutil.HoldPort(t), testutil.HoldPort(t)
	redisAddr, kafkaAddr := redis.Addr, kafka.Addr
	env := baseEnv()
	env["KAFKA_BROKERS"] = kafkaAddr
	env["REDIS_URL"] = "redis://" + redisAddr + "/0"
	env["REDIS_NAMESPACE"] = testenv.Namespace(t)
	env["SAMPLEDB_URL"] = "http://" + testutil.HoldPort(t).Addr
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

// proxy listens on the held port and forwards its TCP connections to the
// unix socket sock until the test ends.
func proxy(t *testing.T, h *testutil.HeldPort, sock string) {
	t.Helper()
	ln := h.Listen(t)
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
