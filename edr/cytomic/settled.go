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

// settledMax bounds the answers kept, counted as operations plus the
// machines their /info answers list (an operation may name thousands):
// beyond it, Collect waits for a round as it would without them.
const settledMax = 100000

// settledCache keeps, for settledFresh, the /osQuery/info and /state
// answers about operations a poll found settled. Collect needs exactly
// those answers: with them it downloads at once instead of waiting for the
// next round, which held one of the account's call slots per collecting
// task for up to a round — after a takeover of hundreds of finished
// operations, collects queued for tens of seconds, and the account's polls
// behind them. Safe for concurrent use.
type settledCache struct {
	mu     sync.Mutex
	m      map[string]settledOp // by operation ID
	weight int                  // of the answers in m (settledOp.weight)
	swept  time.Time            // the last sweep of stale answers
}

type settledOp struct {
	info  infoOp
	state stateOp
	at    time.Time
}

func (op settledOp) weight() int { return 1 + len(op.info.Info) }

// fresh says whether the answer may stand in for a round at now.
func (op settledOp) fresh(now time.Time) bool {
	return now.Sub(op.at) < settledFresh && !now.Before(op.at)
}

// keep records the answers res holds about ref's operations at now (all of
// them, or nothing).
func (c *settledCache) keep(ref reference, res roundResult, now time.Time) {
	ids := ref.ids()
	ops := make([]settledOp, 0, len(ids))
	w := 0
	for _, id := range ids {
		info, ok1 := res.info[id.text]
		st, ok2 := res.state[id.text]
		if !ok1 || !ok2 {
			return
		}
		op := settledOp{info: info, state: st, at: now}
		ops = append(ops, op)
		w += op.weight()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]settledOp{}
	}
	if c.weight+w > settledMax {
		// Full: sweep the stale answers out, at most once a second (a
		// sweep reads the whole map).
		if now.Sub(c.swept) >= time.Second || now.Before(c.swept) {
			c.swept = now
			for k, op := range c.m {
				if !op.fresh(now) {
					c.drop(k, op)
				}
			}
		}
		if c.weight+w > settledMax {
			return
		}
	}
	c.dropIDs(ids)
	for i, id := range ids {
		c.m[id.text] = ops[i]
		c.weight += ops[i].weight()
	}
}

// drop forgets the answer kept about operation k. c.mu is held.
func (c *settledCache) drop(k string, op settledOp) {
	delete(c.m, k)
	c.weight -= op.weight()
}

// dropIDs forgets the answers kept about ids (which may repeat one). c.mu
// is held.
func (c *settledCache) dropIDs(ids []opID) {
	for _, id := range ids {
		if op, ok := c.m[id.text]; ok {
			c.drop(id.text, op)
		}
	}
}

// take returns, and forgets, the answers kept about every one of ids if
// all are there and fresh at now.
func (c *settledCache) take(ids []opID, now time.Time) (roundResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if op, ok := c.m[id.text]; !ok || !op.fresh(now) {
			return roundResult{}, false
		}
	}
	res := roundResult{info: make(map[string]infoOp, len(ids)), state: make(map[string]stateOp, len(ids))}
	for _, id := range ids {
		op := c.m[id.text]
		res.info[id.text], res.state[id.text] = op.info, op.state
	}
	c.dropIDs(ids)
	return res, true
}

// forget drops what is kept about ids (the operation was abandoned).
func (c *settledCache) forget(ids []opID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropIDs(ids)
}
