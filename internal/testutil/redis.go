package testutil

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RedisCounter is a go-redis hook that counts what a client sends: Scripts,
// the commands that run a Lua script (EVAL, EVALSHA, …), and Trips, the
// round trips (a pipeline is one). Add it with client.AddHook.
type RedisCounter struct {
	Scripts atomic.Int64
	Trips   atomic.Int64
}

// DialHook implements redis.Hook.
func (h *RedisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *RedisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.Trips.Add(1)
		if strings.HasPrefix(cmd.Name(), "eval") {
			h.Scripts.Add(1)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *RedisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.Trips.Add(1)
		for _, c := range cmds {
			if strings.HasPrefix(c.Name(), "eval") {
				h.Scripts.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}
