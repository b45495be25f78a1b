package main

// `worker run` on a Redis Cluster: REDIS_CLUSTER_ADDRS (with the cluster's
// ACL user) instead of REDIS_URL, against the test binary's three-master
// cluster on loopback (testenv.RedisCluster).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
)

// clusterUser creates an ACL user like the fleet's (its namespaces only, no
// dangerous commands) on every master of the test cluster, for this test
// only, and returns its name.
func clusterUser(t *testing.T) string {
	t.Helper()
	user := "fleet-" + testenv.Namespace(t)
	acl := []any{"ACL", "SETUSER", user, "on", ">" + secPassword, "~{analysisfleet}*", "~{t*}*", "resetchannels", "+@all", "-@dangerous"}
	for _, addr := range testenv.RedisCluster(t).Addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Do(ctx, acl...).Err()
		cancel()
		require.NoError(t, err, addr)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = c.Do(ctx, "ACL", "DELUSER", user).Err()
			c.Close()
		})
	}
	return user
}

// clusterEnv is a full worker environment on the test cluster as user.
func clusterEnv(t *testing.T, user, password string) map[string]string {
	env := baseEnv()
	delete(env, "REDIS_URL")
	env["REDIS_CLUSTER_ADDRS"] = strings.Join(testenv.RedisCluster(t).Addrs, ",")
	env["REDIS_CLUSTER_USERNAME"] = user
	env["REDIS_CLUSTER_PASSWORD"] = password
	return env
}

// clusterFromEnv loads the worker configuration and builds the client the
// way `worker run` does.
func clusterFromEnv(t *testing.T, env map[string]string) (redis.UniversalClient, *config) {
	t.Helper()
	c, err := load(env)
	require.NoError(t, err)
	require.Nil(t, c.redis.Server)
	require.NotNil(t, c.redis.Cluster)
	rdb := c.redis.NewClient()
	t.Cleanup(func() { rdb.Close() })
	_, ok := rdb.(*redis.ClusterClient)
	require.True(t, ok, "a cluster client, not a client of one node")
	return rdb, c
}

func TestRedisClusterLedgerAndACLEndToEnd(t *testing.T) {
	t.Parallel()
	user := clusterUser(t)

	t.Run("ping and ledger", func(t *testing.T) {
		t.Parallel()
		rdb, c := clusterFromEnv(t, clusterEnv(t, user, secPassword))
		_, err := redisPing(t, rdb)
		require.NoError(t, err)
		requireLedgerRoundTrip(t, rdb, c)
	})
	t.Run("the ACL is in force on every master", func(t *testing.T) {
		t.Parallel()
		rdb, _ := clusterFromEnv(t, clusterEnv(t, user, secPassword))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := range 3 * testenv.ClusterMasters { // keys of several slots, so of several masters
			err := rdb.Set(ctx, fmt.Sprintf("outside:the:namespace:%d", i), "x", 0).Err()
			require.ErrorContains(t, err, "NOPERM")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		rdb, _ := clusterFromEnv(t, clusterEnv(t, user, badPassword))
		ctx, err := redisPing(t, rdb)
		requireFast(t, ctx, err)
		require.ErrorContains(t, err, "WRONGPASS")
		require.NotContains(t, err.Error(), badPassword)
		require.NotContains(t, err.Error(), secPassword)
	})
	t.Run("password from a file", func(t *testing.T) {
		t.Parallel()
		env := clusterEnv(t, user, "")
		delete(env, "REDIS_CLUSTER_PASSWORD")
		f := filepath.Join(t.TempDir(), "redis-password")
		require.NoError(t, os.WriteFile(f, []byte(secPassword+"\n"), 0o600))
		env["REDIS_CLUSTER_PASSWORD_FILE"] = f
		rdb, c := clusterFromEnv(t, env)
		requireLedgerRoundTrip(t, rdb, c)
	})
}

// TestWorkerRunsJobsOnARedisCluster: a worker built as `worker run` builds
// it, with its ledger on the cluster, takes jobs from Kafka to their
// terminal state in SampleDB (an abort among them): admissions, the
// session's renewals and mailbox on clients of their own, checkpoints,
// decisions and completions all reach the namespace's master.
func TestWorkerRunsJobsOnARedisCluster(t *testing.T) {
	t.Parallel()
	topics := intake.DefaultTopics
	kc, stack, env := runWorld(t, 2, append(append([]string{}, topics...), intake.DefaultDLQTopic, results.DefaultTopic)...)
	delete(env, "REDIS_URL")
	for k, v := range map[string]string{
		"REDIS_CLUSTER_ADDRS": strings.Join(testenv.RedisCluster(t).Addrs, ","),
		"REDIS_NAMESPACE":     testenv.Namespace(t), "WORKER_ID": "on-cluster", "HTTP_ADDR": "127.0.0.1:0",
		"LEASE_TTL": "10s", "ABORT_POLL_INTERVAL": "1s", "KAFKA_SESSION_TIMEOUT": "6s", "DRAIN_TIMEOUT": "5s",
		"POLL_INTERVAL_MIN": "200ms", "POLL_INTERVAL_MAX": "2s", "RETRY_BACKOFF_MIN": "100ms", "RETRY_BACKOFF_MAX": "2s",
		"CLAIM_INTERVAL": "500ms", "CYTOMIC_ROUND": "100ms", "SOPHOS_POLL_INTERVAL": "100ms", "CBLR_POLL_INTERVAL": "50ms",
	} {
		env[k] = v
	}
	cfg, err := load(env)
	require.NoError(t, err)
	require.NotNil(t, cfg.redis.Cluster)
	n, store := startRun(t, cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		n.Drain(ctx)
	})

	prod := testutil.Client(t, kgo.SeedBrokers(kc.ListenAddrs()...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := loadgen.Run(ctx, loadgen.Config{
		Jobs: 6, Aborts: 2, Topics: topics, Seed: 7, Sensors: []int64{1, 2, 3},
		KnownSample: cblr.DefaultSampleSHA256(), KnownPath: cblr.DefaultSamplePath, Plant: stack.Plant,
		AbortAfter: 50 * time.Millisecond, Customers: stack.Customers(),
	}, stack.SampleDB, prod, intake.DefaultMaxMessageBytes)
	require.NoError(t, err)
	require.Len(t, st.Valid, 6)

	terminal := func() bool {
		for _, id := range st.Valid {
			if j, ok := stack.SampleDB.Job(id); !ok || !sampledb.IsTerminal(j.State) {
				return false
			}
		}
		return true
	}
	require.Eventually(t, terminal, 90*time.Second, 100*time.Millisecond, "every job reaches a terminal state")
	for _, id := range st.Valid {
		j, _ := stack.SampleDB.Job(id)
		tomb, ok := "", false
		require.Eventually(t, func() bool {
			tomb, ok, err = store.Tombstone(ctx, id)
			require.NoError(t, err)
			return ok
		}, 10*time.Second, 50*time.Millisecond, "job %s completed in the ledger after SampleDB acknowledged it", id)
		require.Equal(t, j.State, tomb, "the ledger's terminal state is SampleDB's")
	}
}
