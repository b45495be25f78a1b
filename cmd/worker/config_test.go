package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
	"github.com/analysisfleet/analysisfleet/state"
)

// Pairs that contradict each other are refused, naming the variable.
func TestConfigRefusesInconsistentPairs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		set  map[string]string
		want string // the problem, in full
	}{
		{"poll min above max", map[string]string{"POLL_INTERVAL_MIN": "2m", "POLL_INTERVAL_MAX": "1m"},
			"POLL_INTERVAL_MIN: 2m0s is more than POLL_INTERVAL_MAX (1m0s)"},
		{"poll min above the default max", map[string]string{"POLL_INTERVAL_MIN": "90s"},
			"POLL_INTERVAL_MIN: 1m30s is more than POLL_INTERVAL_MAX (1m0s)"},
		{"retry min above max", map[string]string{"RETRY_BACKOFF_MIN": "10s", "RETRY_BACKOFF_MAX": "5s"},
			"RETRY_BACKOFF_MIN: 10s is more than RETRY_BACKOFF_MAX (5s)"},
		{"regex that does not compile", map[string]string{"KAFKA_TOPIC_REGEX": "Sample.(OSL"},
			"KAFKA_TOPIC_REGEX: not a regular expression: error parsing regexp: missing closing ): `Sample.(OSL`"},
		{"regex and topics", map[string]string{"KAFKA_TOPIC_REGEX": `^Jobs\.`, "KAFKA_TOPICS": "Jobs.A"},
			"KAFKA_TOPIC_REGEX: is set together with KAFKA_TOPICS: set one of the two (the regex would replace the list)"},
		{"regex matching the DLQ", map[string]string{"KAFKA_TOPIC_REGEX": `^Sample\.Analysis\.Job\.`},
			"KAFKA_TOPIC_REGEX: matches Sample.Analysis.Job.DLQ (KAFKA_DLQ_TOPIC), a topic the worker writes"},
		{"regex matching the result topic", map[string]string{"KAFKA_TOPIC_REGEX": `Result$`},
			"KAFKA_TOPIC_REGEX: matches Sample.Analysis.Result (KAFKA_RESULT_TOPIC), a topic the worker writes"},
		{"heartbeat not shorter than the session", map[string]string{"KAFKA_SESSION_TIMEOUT": "10s", "KAFKA_HEARTBEAT_INTERVAL": "10s"},
			"KAFKA_HEARTBEAT_INTERVAL: 10s is not shorter than KAFKA_SESSION_TIMEOUT (10s)"},
		{"unknown mechanism, no user or password", map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI"},
			`KAFKA_SASL_MECHANISM: "GSSAPI" is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`},
		{"unknown mechanism, a missing password file", map[string]string{"KAFKA_SASL_MECHANISM": "oauthbearer", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent"},
			`KAFKA_SASL_MECHANISM: "OAUTHBEARER" is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`},
		{"namespace", map[string]string{"REDIS_NAMESPACE": "a:b"},
			`REDIS_NAMESPACE: "a:b" may not contain braces, colons or spaces`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv()
			for k, v := range c.set {
				env[k] = v
			}
			_, err := load(env)
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), c.want), "got %q", err)
			require.Len(t, envconf.AsProblems(err), 1, "%v", err)
		})
	}
	// Consistent values of the same variables are accepted.
	env := baseEnv()
	for k, v := range map[string]string{"POLL_INTERVAL_MIN": "1m", "POLL_INTERVAL_MAX": "1m", "RETRY_BACKOFF_MIN": "100ms",
		"RETRY_BACKOFF_MAX": "1s", "KAFKA_TOPIC_REGEX": `^Sample\.Analysis\.Job\.(OSL|SVG)$`, "KAFKA_SESSION_TIMEOUT": "6s",
		"KAFKA_HEARTBEAT_INTERVAL": "300ms"} {
		env[k] = v
	}
	c, err := load(env)
	require.NoError(t, err)
	require.Equal(t, `^Sample\.Analysis\.Job\.(OSL|SVG)$`, c.node.Intake.TopicRegex)
	env["KAFKA_DLQ_TOPIC"], env["KAFKA_TOPIC_REGEX"] = "", `^Sample\.Analysis\.Job\.`
	_, err = load(env)
	require.NoError(t, err, "with dead-lettering disabled, the regex matches no topic the worker writes")
}

func TestConfigReadsTheNewVariables(t *testing.T) {
	t.Parallel()
	c, err := load(baseEnv())
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, c.node.Intake.RebalanceTimeout)
	require.Zero(t, c.node.Intake.HeartbeatInterval, "the consumer's default: min(3s, session/10)")
	require.Equal(t, 30*time.Second, c.node.Runner.CancelTimeout)
	require.Equal(t, 2*time.Minute, c.node.Runner.PublishTimeout)

	env := baseEnv()
	env["CANCEL_TIMEOUT"], env["PUBLISH_TIMEOUT"] = "7s", "9s"
	c, err = load(env)
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, c.node.Runner.CancelTimeout)
	require.Equal(t, 9*time.Second, c.node.Runner.PublishTimeout)
	env["CANCEL_TIMEOUT"], env["PUBLISH_TIMEOUT"] = "forever", "0s"
	_, err = load(env)
	require.ErrorContains(t, err, `CANCEL_TIMEOUT: "forever" is not a duration`)
	require.ErrorContains(t, err, "PUBLISH_TIMEOUT: 0s is out of range [1s, 1h0m0s]")

	env = baseEnv()
	env["CALL_CONCURRENCY"], env["VENDOR_CONCURRENCY"] = "200", "4"
	c, err = load(env)
	require.NoError(t, err)
	require.Equal(t, 200, c.node.Runner.CallConcurrency)
	require.Equal(t, 4, c.node.Runner.VendorConcurrency)
	env["CALL_CONCURRENCY"], env["VENDOR_CONCURRENCY"] = "1", "0"
	_, err = load(env)
	require.ErrorContains(t, err, "CALL_CONCURRENCY: 1 is out of range [2, 10000]")
	require.ErrorContains(t, err, "VENDOR_CONCURRENCY: 0 is out of range [1, 10000]")
}

// The fault suite's KAFKA_REBALANCE_TIMEOUT and KAFKA_HEARTBEAT_INTERVAL
// reach the Kafka client of a worker started the way `worker run` starts
// one (a kfake cluster, a real Redis, the simulators).
func TestKafkaTimingReachesTheConsumer(t *testing.T) {
	t.Parallel()
	_, _, env := runWorld(t, 1, testutil.TopicOSL, testutil.TopicSVG)
	for k, v := range map[string]string{
		"REDIS_URL":       testenv.Redis(t).URL(),
		"REDIS_NAMESPACE": testenv.Namespace(t), "WORKER_ID": "timing", "HTTP_ADDR": "127.0.0.1:0",
		"KAFKA_SESSION_TIMEOUT": "6s", "KAFKA_REBALANCE_TIMEOUT": "3s", "KAFKA_HEARTBEAT_INTERVAL": "300ms",
	} {
		env[k] = v
	}
	cfg, err := load(env)
	require.NoError(t, err)
	n, _ := startRun(t, cfg)
	t.Cleanup(n.Stop)

	cl := n.Consumer.Client()
	require.Equal(t, 3*time.Second, cl.OptValue(kgo.RebalanceTimeout))
	require.Equal(t, 300*time.Millisecond, cl.OptValue(kgo.HeartbeatInterval))
	require.Equal(t, 6*time.Second, cl.OptValue(kgo.SessionTimeout))
}

// runWorld starts what a worker runs against: a Kafka-protocol broker with
// topics (partitions each) and the simulators. env points a worker at them.
func runWorld(t *testing.T, partitions int32, topics ...string) (kc *kfake.Cluster, stack *simstack.Stack, env map[string]string) {
	t.Helper()
	kc = testutil.Kafka(t, kfake.SeedTopics(partitions, topics...), kfake.GroupMinSessionTimeout(time.Second))
	stack, err := simstack.Start(simstack.Config{Timing: simstack.TestTiming})
	require.NoError(t, err)
	t.Cleanup(stack.Close)
	env = stack.Env()
	env["KAFKA_BROKERS"] = strings.Join(kc.ListenAddrs(), ",")
	return kc, stack, env
}

// startRun starts a node from cfg as `worker run` builds it: its ledger on
// cfg's Redis, SampleDB, the vendor accounts and the metrics. The caller
// stops it (before the Redis client closes, at the end of the test). store
// is the node's ledger.
func startRun(t *testing.T, cfg *config) (n *node.Node, store *state.Store) {
	t.Helper()
	rdb := cfg.redis.NewClient()
	t.Cleanup(func() { rdb.Close() })
	store, err := state.New(rdb, state.Config{Namespace: cfg.ns, LeaseTTL: cfg.leaseTTL})
	require.NoError(t, err)
	reg := node.NewRegistry()
	m := metrics.New(reg)
	cfg.node.Registry, cfg.node.Metrics = reg, m
	sdb, err := newSampleDB(cfg, m, zap.NewNop())
	require.NoError(t, err)
	accounts, err := newRegistry(cfg, store, m, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(accounts.Close)
	cfg.node.Store, cfg.node.Runner.SampleDB, cfg.node.Runner.Accounts = store, sdb, accounts
	n, err = node.Start(context.Background(), cfg.node)
	require.NoError(t, err)
	return n, store
}

// DEBUG_ADDR serves profiles on a loopback address only.
func TestConfigDebugAddrIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	c, err := load(baseEnv())
	require.NoError(t, err)
	require.Empty(t, c.debugAddr, "off by default")
	for _, ok := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:0"} {
		env := baseEnv()
		env["DEBUG_ADDR"] = ok
		c, err := load(env)
		require.NoError(t, err, ok)
		require.Equal(t, ok, c.debugAddr)
	}
	for _, bad := range []string{":6060", "0.0.0.0:6060", "10.1.2.3:6060", "example.com:6060", "127.0.0.1"} {
		env := baseEnv()
		env["DEBUG_ADDR"] = bad
		_, err := load(env)
		require.ErrorContains(t, err, "DEBUG_ADDR: ", bad)
		require.Len(t, envconf.AsProblems(err), 1, "%v", err)
	}
}
