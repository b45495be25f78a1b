package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a private redis-server the bench starts: on a unix socket
// in a fresh directory, without persistence, so its command counts and
// memory are the worker's alone.
type redisServer struct {
	cmd    *exec.Cmd
	dir    string
	sock   string
	done   chan struct{}
	client *redis.Client
	// infos counts the INFO commands the bench itself sent (not the
	// worker's). Used by one goroutine at a time.
	infos int64
}

func startRedis(ctx context.Context, bin, parent string) (*redisServer, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("bench: %s not found (install the Debian package redis-server, or pass its path): %w", bin, err)
	}
	dir, err := os.MkdirTemp(parent, "redis-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(path, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction")
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start redis-server: %w", err)
	}
	r := &redisServer{cmd: cmd, dir: dir, sock: sock, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = cmd.Wait()
	}()
	r.client = redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, PoolSize: 2})
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := r.client.Ping(pctx).Err()
		cancel()
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return nil, fmt.Errorf("bench: redis-server did not answer: %w", err)
		}
		select {
		case <-r.done:
			r.stop()
			return nil, errors.New("bench: redis-server exited at start")
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// url is the worker's REDIS_URL.
func (r *redisServer) url() string { return "unix://" + r.sock }

func (r *redisServer) pid() int { return r.cmd.Process.Pid }

// stop kills the server it started and removes its directory.
func (r *redisServer) stop() {
	if r.client != nil {
		r.client.Close()
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	os.RemoveAll(r.dir)
}

// redisInfo is what the bench reads from INFO.
type redisInfo struct {
	calls      map[string]int64 // by command (lower case), from commandstats
	usedMemory int64
	keys       int64
	// netIn and netOut are the bytes Redis read from and wrote to its
	// clients (total_net_input_bytes, total_net_output_bytes).
	netIn, netOut int64
	// seq is how many INFO commands the bench had sent before this one;
	// reply the size of this one's answer on the wire.
	seq   int64
	reply int64
}

func (r *redisServer) info(ctx context.Context) (redisInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	seq := r.infos
	r.infos++
	s, err := r.client.Info(ctx, "commandstats", "memory", "keyspace", "stats").Result()
	if err != nil {
		return redisInfo{}, fmt.Errorf("bench: redis INFO: %w", err)
	}
	in := parseInfo(s)
	in.seq = seq
	in.reply = int64(len(s) + len(strconv.Itoa(len(s))) + 5) // $<len>\r\n…\r\n
	return in, nil
}

// parseInfo reads INFO's commandstats ("cmdstat_get:calls=3,usec=…"),
// used_memory and the keyspace's key counts.
func parseInfo(s string) redisInfo {
	out := redisInfo{calls: map[string]int64{}}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(k, "cmdstat_"):
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					out.calls[strings.TrimPrefix(k, "cmdstat_")] = c
				}
			}
		case k == "used_memory":
			out.usedMemory, _ = strconv.ParseInt(v, 10, 64)
		case k == "total_net_input_bytes":
			out.netIn, _ = strconv.ParseInt(v, 10, 64)
		case k == "total_net_output_bytes":
			out.netOut, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "db"):
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "keys="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					out.keys += c
				}
			}
		}
	}
	return out
}

// commandsBetween is the commands executed from snapshot a to snapshot b,
// by command, without the INFO commands the bench sent: a's own INFO is
// counted in b, b's is not. Commands a script runs (redis.call) count as
// commands, as Redis counts them: they are work the server does.
func commandsBetween(a, b redisInfo) (total int64, by map[string]int64) {
	own := b.seq - a.seq
	by = map[string]int64{}
	for k, n := range b.calls {
		d := n - a.calls[k]
		if k == "info" {
			d -= own
		}
		if d > 0 {
			by[k] = d
			total += d
		}
	}
	return total, by
}

// infoRequest is the size of the bench's INFO command on the wire, about.
const infoRequest = 70

// netBetween is the bytes the other clients (the worker) sent to Redis
// and received from it from snapshot a to snapshot b.
func netBetween(a, b redisInfo) (in, out int64) {
	own := b.seq - a.seq
	in = b.netIn - a.netIn - own*infoRequest
	out = b.netOut - a.netOut - a.reply*own
	return max(in, 0), max(out, 0)
}

// scriptCommands are the commands that run a script.
var scriptCommands = []string{"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}
