package cytomic

import (
	"sync"
	"time"
)

// settledFresh is how long the answers of the round in which a poll found
// an operation settled stand in for a new round at its Collect. The result
// file's URL in them is valid for minutes (Collect asks /state again when
// it has expired anyway).
const settledFresh = time.Minute

// settledMax bounds the answers kept: beyond it, Collect waits for a round
// as it would without them.
const settledMax = 20000

// settledCache keeps, for settledFresh, the /osQuery/info and /state
// answers about operations a poll found settled. Collect needs exactly
// those answers: with them it downloads at once instead of waiting for the
// next round, which held one of the account's call slots per collecting
// task for up to a round — after a takeover of hundreds of finished
// operations, collects queued for tens of seconds, and the account's polls
// behind them. Safe for concurrent use.
type settledCache struct {
	mu sync.Mutex
	m  map[string]settledOp // by operation ID
}

type settledOp struct {
	info  infoOp
	state stateOp
	at    time.Time
}

// keep records the answers res holds about ref's operations at now (all of
// them, or nothing).
func (c *settledCache) keep(ref reference, res roundResult, now time.Time) {
	ids := ref.ids()
	ops := make([]settledOp, 0, len(ids))
	for _, id := range ids {
		info, ok1 := res.info[id.text]
		st, ok2 := res.state[id.text]
		if !ok1 || !ok2 {
			return
		}
		ops = append(ops, settledOp{info: info, state: st, at: now})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]settledOp{}
	}
	if len(c.m)+len(ids) > settledMax {
		for k, op := range c.m {
			if now.Sub(op.at) >= settledFresh {
				delete(c.m, k)
			}
		}
		if len(c.m)+len(ids) > settledMax {
			return
		}
	}
	for i, id := range ids {
		c.m[id.text] = ops[i]
	}
}

// take returns, and forgets, the answers kept about every one of ids if
// all are there and fresh at now.
func (c *settledCache) take(ids []opID, now time.Time) (roundResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := roundResult{info: make(map[string]infoOp, len(ids)), state: make(map[string]stateOp, len(ids))}
	for _, id := range ids {
		op, ok := c.m[id.text]
		if !ok || now.Sub(op.at) >= settledFresh || now.Before(op.at) {
			return roundResult{}, false
		}
		res.info[id.text], res.state[id.text] = op.info, op.state
	}
	for _, id := range ids {
		delete(c.m, id.text)
	}
	return res, true
}

// forget drops what is kept about ids (the operation was abandoned).
func (c *settledCache) forget(ids []opID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id.text)
	}
}
