package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterMasters is how many masters StartRedisCluster starts for the
// shared cluster (RedisCluster): the smallest cluster on which the fleet's
// namespaces can land on different masters.
const ClusterMasters = 3

// clusterSlots is Redis Cluster's fixed number of hash slots.
const clusterSlots = 16384

var sharedCluster = shared[*RedisClusterServer]{start: func() (*RedisClusterServer, error) {
	return StartRedisCluster(ClusterMasters)
}}

// RedisClusterServer is a Redis Cluster of masters (no replicas) started
// for tests: one redis-server per master, each on two loopback ports of its
// own (clients and cluster bus), without persistence, its node file and log
// in a temporary directory.
type RedisClusterServer struct {
	// Addrs are the masters' client addresses (127.0.0.1:port), in the
	// order their slot ranges were assigned.
	Addrs []string
	nodes []*clusterNode
	dir   string
}

type clusterNode struct {
	addr   string
	port   int
	bus    int
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
}

// StartRedisCluster starts n redis-server processes in cluster mode on free
// 127.0.0.1 ports, splits the 16384 slots evenly between them, joins them
// into one cluster and returns once every node reports cluster_state:ok
// with all n masters known. A port taken by someone else between choosing
// and binding fails one attempt; it tries three times.
func StartRedisCluster(n int) (*RedisClusterServer, error) {
	if n < 1 {
		return nil, fmt.Errorf("testenv: a cluster needs at least one master, not %d", n)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("testenv: redis-server not found on PATH (install the Debian package redis-server): %w", err)
	}
	var errs []error
	for range 3 {
		c, err := startCluster(bin, n)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("testenv: redis cluster: %w", errors.Join(errs...))
}

func startCluster(bin string, n int) (_ *RedisClusterServer, err error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "af-redis-cluster-")
	if err != nil {
		return nil, err
	}
	c := &RedisClusterServer{dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for i := range n {
		nd := &clusterNode{port: ports[2*i], bus: ports[2*i+1], exited: make(chan struct{})}
		nd.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(nd.port))
		nd.log = filepath.Join(dir, fmt.Sprintf("node-%d.log", nd.port))
		nd.cmd = exec.Command(bin,
			"--bind", "127.0.0.1", "--port", strconv.Itoa(nd.port),
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(nd.bus),
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", nd.port)),
			"--cluster-node-timeout", "5000",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", nd.log,
			"--maxmemory-policy", "noeviction")
		if err := nd.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		go func() { _ = nd.cmd.Wait(); close(nd.exited) }()
		c.nodes = append(c.nodes, nd)
		c.Addrs = append(c.Addrs, nd.addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clients := make([]*redis.Client, n)
	for i, nd := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: nd.addr, MaxRetries: -1})
		defer clients[i].Close()
	}
	for i, nd := range c.nodes {
		if err := c.until(ctx, "answer PING on "+nd.addr, func(ctx context.Context) (bool, error) {
			return clients[i].Ping(ctx).Err() == nil, nil
		}); err != nil {
			return nil, err
		}
	}
	for i, cl := range clients {
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := cl.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			return nil, fmt.Errorf("%s: CLUSTER ADDSLOTS %d-%d: %w", c.nodes[i].addr, lo, hi, err)
		}
		// Distinct config epochs (as redis-cli --cluster create sets them)
		// spare the nodes resolving an epoch collision before they agree.
		if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return nil, fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", c.nodes[i].addr, err)
		}
	}
	for _, nd := range c.nodes[1:] {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", nd.port, nd.bus).Err(); err != nil {
			return nil, fmt.Errorf("CLUSTER MEET %s: %w", nd.addr, err)
		}
	}
	// The nodes agree through gossip on the cluster bus, and a master
	// holds its state at "fail" for two seconds after its first check
	// (CLUSTER_WRITABLE_DELAY); nothing signals when they are done. Poll
	// every node's CLUSTER INFO (a bounded loop with a deadline) until each
	// one knows all masters and serves every slot: about three seconds.
	for i, nd := range c.nodes {
		if err := c.until(ctx, "report cluster_state:ok on "+nd.addr, func(ctx context.Context) (bool, error) {
			info, err := clients[i].ClusterInfo(ctx).Result()
			if err != nil {
				return false, nil
			}
			return clusterReady(info, n), nil
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// clusterReady reports whether a node's CLUSTER INFO says the cluster is
// whole: state ok, every slot assigned and served, all n masters known.
func clusterReady(info string, n int) bool {
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": strconv.Itoa(clusterSlots),
		"cluster_slots_ok":       strconv.Itoa(clusterSlots),
		"cluster_known_nodes":    strconv.Itoa(n),
		"cluster_size":           strconv.Itoa(n),
	}
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && want[k] == v {
			delete(want, k)
		}
	}
	return len(want) == 0
}

// until polls cond every 20ms until it holds, ctx ends, or a node exits.
func (c *RedisClusterServer) until(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		ok, err := cond(pctx)
		cancel()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		for _, nd := range c.nodes {
			select {
			case <-nd.exited:
				return fmt.Errorf("redis-server %s exited before the cluster was ready: %s", nd.addr, tail(nd.log))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster did not %s in time: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop kills every node and removes the cluster's directory.
func (c *RedisClusterServer) Stop() {
	for _, nd := range c.nodes {
		if nd.cmd.Process != nil {
			_ = nd.cmd.Process.Kill()
		}
	}
	for _, nd := range c.nodes {
		<-nd.exited
	}
	os.RemoveAll(c.dir)
}

// Client returns a cluster client seeded with every master's address. The
// caller closes it.
func (c *RedisClusterServer) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, PoolSize: 16})
}

// RedisCluster returns the test binary's shared cluster of ClusterMasters
// masters, starting it on first use (it is stopped by Main).
func RedisCluster(t testing.TB) *RedisClusterServer {
	t.Helper()
	return sharedCluster.get(t)
}

// RedisClusterClient returns a client to the shared test cluster and a
// namespace no other test uses. The client is closed when the test ends.
func RedisClusterClient(t testing.TB) (*redis.ClusterClient, string) {
	t.Helper()
	c := RedisCluster(t).Client()
	t.Cleanup(func() { c.Close() })
	return c, Namespace(t)
}

// freePorts returns n distinct loopback ports that were free a moment ago:
// the kernel picks each (listen on port 0), all held open together so none
// repeats, then closed for the caller to bind.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last lines of a node's log, for errors.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}
