package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
	"github.com/analysisfleet/analysisfleet/state"
)

func TestConfigReadsTheNewVariables(t *testing.T) {
	t.Parallel()
	c, err := load(baseEnv())
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, c.node.RebalanceTimeout)
	require.Zero(t, c.node.HeartbeatInterval, "the consumer's default: min(3s, session/10)")
	require.Equal(t, 30*time.Second, c.node.CancelTimeout)
	require.Equal(t, 2*time.Minute, c.node.PublishTimeout)

	env := baseEnv()
	env["CANCEL_TIMEOUT"], env["PUBLISH_TIMEOUT"] = "7s", "9s"
	c, err = load(env)
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, c.node.CancelTimeout)
	require.Equal(t, 9*time.Second, c.node.PublishTimeout)
	env["CANCEL_TIMEOUT"], env["PUBLISH_TIMEOUT"] = "forever", "0s"
	_, err = load(env)
	require.ErrorContains(t, err, `CANCEL_TIMEOUT: "forever" is not a duration`)
	require.ErrorContains(t, err, "PUBLISH_TIMEOUT: 0s is out of range [1s, 1h0m0s]")
}

// The fault suite's KAFKA_REBALANCE_TIMEOUT and KAFKA_HEARTBEAT_INTERVAL
// reach the Kafka client of a worker started the way `worker run` starts
// one (a kfake cluster, a real Redis, the simulators).
func TestKafkaTimingReachesTheConsumer(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.SeedTopics(1, "Sample.Analysis.Job.OSL", "Sample.Analysis.Job.SVG"),
		kfake.GroupMinSessionTimeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	stack, err := simstack.Start(simstack.Config{Timing: simstack.TestTiming})
	require.NoError(t, err)
	t.Cleanup(stack.Close)
	env := stack.Env()
	for k, v := range map[string]string{
		"KAFKA_BROKERS": strings.Join(kc.ListenAddrs(), ","), "REDIS_URL": testenv.Redis(t).URL(),
		"REDIS_NAMESPACE": testenv.Namespace(t), "WORKER_ID": "timing", "HTTP_ADDR": "127.0.0.1:0",
		"KAFKA_SESSION_TIMEOUT": "6s", "KAFKA_REBALANCE_TIMEOUT": "3s", "KAFKA_HEARTBEAT_INTERVAL": "300ms",
	} {
		env[k] = v
	}
	cfg, err := load(env)
	require.NoError(t, err)

	rdb := redis.NewClient(cfg.redis)
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
	cfg.node.Store, cfg.node.SampleDB, cfg.node.Accounts = store, sdb, accounts
	n, err := node.Start(context.Background(), cfg.node)
	require.NoError(t, err)
	t.Cleanup(n.Stop)

	cl := n.Consumer.Client()
	require.Equal(t, 3*time.Second, cl.OptValue(kgo.RebalanceTimeout))
	require.Equal(t, 300*time.Millisecond, cl.OptValue(kgo.HeartbeatInterval))
	require.Equal(t, 6*time.Second, cl.OptValue(kgo.SessionTimeout))
}
