package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/redis/go-redis/v9"
)

// Event is one entry of a job's timeline: what happened to it, when, by
// which worker and under which fencing token. The ledger keeps the last
// MaxTimeline events of a job, and keeps them for HistoryTTL after the job
// finished.
//
// The scripts write the lease events (admitted, taken over, claimed,
// released, released by an operator, adopted, abort requested); the runner
// writes the rest through CheckpointNotes, Decide and Complete (executing,
// task created, vendor operation started, task ended, cancel at the
// vendor, decided, terminal state reported).
type Event struct {
	At     time.Time `json:"-"`
	Ev     string    `json:"ev"`
	Worker string    `json:"worker,omitempty"`
	Token  int64     `json:"token,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// MaxTimeline is how many events of a job the ledger keeps (the last).
const MaxTimeline = 200

// maxEventDetail bounds an event's detail.
const maxEventDetail = 512

type wireEvent struct {
	At     int64  `json:"at"`
	Ev     string `json:"ev"`
	Worker string `json:"worker,omitempty"`
	Token  int64  `json:"token,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// encode is the event as the scripts store it; "" (nothing stored) for
// the zero Event.
func (e Event) encode() string {
	if e.Ev == "" {
		return ""
	}
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	d := textfmt.Clip(e.Detail, maxEventDetail)
	b, _ := json.Marshal(wireEvent{At: at.UnixMilli(), Ev: e.Ev, Worker: e.Worker, Token: e.Token, Detail: d})
	return string(b)
}

// Timeline returns the job's timeline, oldest first (empty when the
// ledger knows none). An entry that does not parse is returned as an
// "unreadable" event rather than dropped.
func (s *Store) Timeline(ctx context.Context, id string) ([]Event, error) {
	raw, err := s.rdb.LRange(ctx, s.pfx+"tl:"+id, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("state: timeline: %w", err)
	}
	out := make([]Event, 0, len(raw))
	for _, r := range raw {
		var w wireEvent
		if err := json.Unmarshal([]byte(r), &w); err != nil || w.Ev == "" {
			out = append(out, Event{Ev: "unreadable", Detail: fmt.Sprintf("%.80q", r)})
			continue
		}
		out = append(out, Event{At: time.UnixMilli(w.At), Ev: w.Ev, Worker: w.Worker, Token: w.Token, Detail: w.Detail})
	}
	return out, nil
}

// Result returns the result summary kept for a finished job (nil, nil when
// there is none: the job has not finished, its history expired, or no
// summary was recorded).
func (s *Store) Result(ctx context.Context, id string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.pfx+"res:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: result: %w", err)
	}
	return b, nil
}

// FinishedJob is a job in the finished index.
type FinishedJob struct {
	ID string
	At time.Time // when it was completed (Redis time)
}

// Finished lists finished jobs whose history is still kept, newest
// first: up to count after cursor ("" = from the newest), and the cursor
// of the next page ("" when there is no more). One round trip, whatever
// the number of finished jobs.
func (s *Store) Finished(ctx context.Context, cursor string, count int64) ([]FinishedJob, string, error) {
	max, lastID := "+inf", ""
	if cursor != "" {
		ms, id, ok := strings.Cut(cursor, ":")
		if _, err := strconv.ParseInt(ms, 10, 64); !ok || err != nil {
			return nil, "", fmt.Errorf("state: finished: bad cursor %q", cursor)
		}
		max, lastID = ms, id
	}
	// Jobs finished in the same millisecond as the cursor's come again
	// (ZREVRANGE orders them by ID, descending): skip up to the cursor's.
	zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.pfx+"finished",
		&redis.ZRangeBy{Max: max, Min: "-inf", Count: count + 64}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("state: finished: %w", err)
	}
	out := make([]FinishedJob, 0, count)
	for _, z := range zs {
		id, at := str(z.Member), int64(z.Score)
		if cursor != "" && strconv.FormatInt(at, 10) == max && id >= lastID {
			continue
		}
		if int64(len(out)) == count {
			last := out[len(out)-1]
			return out, strconv.FormatInt(last.At.UnixMilli(), 10) + ":" + last.ID, nil
		}
		out = append(out, FinishedJob{ID: id, At: time.UnixMilli(at)})
	}
	if int64(len(zs)) == count+64 && len(out) > 0 {
		// The read was cut short by the skip allowance: there may be more.
		last := out[len(out)-1]
		return out, strconv.FormatInt(last.At.UnixMilli(), 10) + ":" + last.ID, nil
	}
	return out, "", nil
}

// FinishedCount returns how many finished jobs the index holds.
func (s *Store) FinishedCount(ctx context.Context) (int64, error) {
	return s.rdb.ZCard(ctx, s.pfx+"finished").Result()
}
