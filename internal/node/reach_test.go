//go:build linux

package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// messages returns the logged messages at level that start with prefix.
func messages(logs *observer.ObservedLogs, level zapcore.Level, prefix string) []string {
	var out []string
	for _, e := range logs.All() {
		if e.Level == level && strings.HasPrefix(e.Message, prefix) {
			out = append(out, e.Message)
		}
	}
	return out
}

// A worker started with a Kafka that does not answer says so at once, at
// ERROR, naming the brokers and the cause, reminds while it lasts, and says
// when Kafka answers; the same for Redis cut off and healed.
func TestUnreachableKafkaAndRedisAreSaidLoudlyOnceAndWhenBack(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	f := newFleet(t, fleetOpts{logs: core, watchEvery: 50 * time.Millisecond, remindEvery: 400 * time.Millisecond})
	held := testutil.HoldPort(t)
	addr := held.Addr
	f.brokers = []string{addr}
	w := f.startWorker("w1")

	var first []string
	require.Eventually(t, func() bool {
		first = messages(logs, zapcore.ErrorLevel, "kafka unreachable: ")
		return len(first) > 0
	}, 15*time.Second, 10*time.Millisecond)
	require.Len(t, first, 1, "said once")
	require.Contains(t, first[0], "kafka unreachable: brokers "+addr+" — ")
	require.Contains(t, first[0], "connection refused")
	require.True(t, strings.HasSuffix(first[0], "; retrying"), first[0])
	require.Eventually(t, func() bool {
		return len(messages(logs, zapcore.ErrorLevel, "kafka still unreachable after ")) > 0
	}, 15*time.Second, 10*time.Millisecond, "a reminder while it lasts")
	require.Len(t, messages(logs, zapcore.ErrorLevel, "kafka unreachable: "), 1, "the first line is not repeated")
	require.Empty(t, messages(logs, zapcore.ErrorLevel, "redis "), "Redis answers")

	held.Release()
	kc, err := kfake.NewCluster(kfake.Ports(held.Port), kfake.SeedTopics(partitions, testutil.TopicOSL, testutil.TopicSVG, testutil.TopicDLQ, testutil.TopicResult))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	require.Eventually(t, func() bool {
		return len(messages(logs, zapcore.InfoLevel, "kafka reachable again after ")) == 1
	}, 15*time.Second, 10*time.Millisecond)

	w.dialer.partition()
	require.Eventually(t, func() bool {
		m := messages(logs, zapcore.ErrorLevel, "redis unreachable: unix:"+f.redis+" — ")
		return len(m) == 1 && strings.Contains(m[0], "partitioned from Redis")
	}, 15*time.Second, 10*time.Millisecond)
	w.dialer.heal()
	require.Eventually(t, func() bool {
		return len(messages(logs, zapcore.InfoLevel, "redis reachable again after ")) == 1
	}, 15*time.Second, 10*time.Millisecond)
	require.Len(t, messages(logs, zapcore.ErrorLevel, "kafka unreachable: "), 1, "Kafka was not down again")
}
