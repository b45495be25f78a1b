package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRedisClusterIsWholeAndRoutesByHashTag: the shared cluster has
// ClusterMasters masters on loopback that split every slot between them,
// and a cluster client reaches each through the key's slot.
func TestRedisClusterIsWholeAndRoutesByHashTag(t *testing.T) {
	t.Parallel()
	cc, ns := testenv.RedisClusterClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	shards, err := cc.ClusterShards(ctx).Result()
	require.NoError(t, err)
	require.Len(t, shards, testenv.ClusterMasters, "one shard per master")
	var covered int64
	for _, s := range shards {
		require.Len(t, s.Nodes, 1, "masters only, no replicas")
		require.Equal(t, "127.0.0.1", s.Nodes[0].IP, "loopback only")
		for _, r := range s.Slots {
			covered += r.End - r.Start + 1
		}
	}
	require.EqualValues(t, 16384, covered)

	// Keys of one hash tag share a slot and a master, whatever follows it.
	k1, k2 := "{"+ns+"}:a", "{"+ns+"}:b"
	require.NoError(t, cc.MSet(ctx, k1, "1", k2, "2").Err(), "a multi-key command within one slot")
	m1, err := cc.MasterForKey(ctx, k1)
	require.NoError(t, err)
	require.Equal(t, int64(2), m1.Exists(ctx, k1, k2).Val(), "both keys live on the slot's master")

	// Keys of different slots are refused together.
	other := "{" + ns + "x}:a"
	for cc.ClusterKeySlot(ctx, other).Val() == cc.ClusterKeySlot(ctx, k1).Val() {
		other += "x"
	}
	node := redis.NewClient(&redis.Options{Addr: m1.Options().Addr})
	defer node.Close()
	err = node.Do(ctx, "MSET", k1, "1", other, "2").Err()
	require.ErrorContains(t, err, "CROSSSLOT")
}
