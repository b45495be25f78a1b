package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

// TestLedgerCommandsOnARedisCluster: with REDIS_CLUSTER_ADDRS instead of
// REDIS_URL, fleetctl reads and changes a ledger that lives on a Redis
// Cluster (the test binary's three masters on loopback) as it does one on a
// single server: status, jobs, job and release.
func TestLedgerCommandsOnARedisCluster(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{redisCluster: true})
	require.NotContains(t, w.env, "REDIS_URL")
	f := w.seedStatus()

	var rep statusReport
	r := w.ok("status", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, "redis://"+strings.Join(testenv.RedisCluster(t).Addrs, ",")+" (cluster)", rep.Redis)
	require.Empty(t, rep.Errors)
	require.Len(t, rep.Workers, 2)
	require.Equal(t, int64(3), rep.Leases.Held)
	require.Equal(t, int64(1), rep.Leases.Claimable)
	require.Len(t, rep.Leases.Sessions, 3)
	require.Len(t, rep.Leases.Due, 1)
	require.Equal(t, "job-d", rep.Leases.Due[0].ID)
	require.Equal(t, int64(1), *rep.Outbox)
	require.Len(t, rep.CoolDowns, 1, "found by SCAN on the namespace's master")

	out := w.ok("jobs").stdout
	require.Equal(t, []string{"job-a", "job-b", "job-c", "job-d"}, ids(t, out))
	require.Regexp(t, `job-a\s+running\s+w1\s+\d+\s+expires in \S+\s+1/2\s+`, out)
	require.Contains(t, w.ok("job", "job-a").stdout, "sophos.xdr_query")

	require.Contains(t, w.ok("release", "job-a").stdout, "released job job-a; previous owner: w1\n")
	require.ErrorIs(t, w.long.Checkpoint(ctx(t), w.sess(w.long, "w1"), f.a, "x", "y"), state.ErrStale, "the old owner is fenced")
	mail, err := w.long.ReadMail(ctx(t), w.sess(w.long, "w1"), 0, 10)
	require.NoError(t, err)
	require.Len(t, mail, 1, "the release reached w1's mailbox on the cluster")
	require.Equal(t, "job-a", mail[0].JobID)
}
