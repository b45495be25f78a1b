package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Progress lines: what a vendor says of a running operation between two
// checkpoints ("412 rows so far"), for people. A poll whose only news is
// its line does not write the job's record (a fenced script, five
// commands): the worker puts the line in a hash of its session's,
// {ns}:lines:<session>, field "<job id>/<task kind>", and writes the lines
// of a second in one HSET. Readers (Get, ListJobs) take a job's lines from
// the hash of the session that holds the job, so a worker that lost a job
// cannot show a line over its new owner's: the lines are fenced by the
// session, not by a check before each write. The hash expires LinesTTL
// after its last write, so a crashed worker's lines go with it.

// LinesTTL is how long a session's progress lines outlive their last
// write. A worker refreshes it while its session lives (LinesWrite).
const LinesTTL = 10 * time.Minute

// ProgressLine is one task's progress line, newer than its checkpoint when
// its Polls count is higher.
type ProgressLine struct {
	Progress string `json:"progress"`
	Polls    int    `json:"polls"`
	NextPoll int64  `json:"nextPoll,omitempty"` // unix ms
}

// Encode returns the stored form of l.
func (l ProgressLine) Encode() string {
	b, _ := json.Marshal(l)
	return string(b)
}

// LineField is the field of the task of kind of job id in its session's
// lines hash.
func LineField(id, kind string) string { return id + "/" + kind }

func (s *Store) linesKey(session string) string { return s.pfx + "lines:" + session }

// WriteLines sets (field, value pairs) and deletes fields of the lines hash
// of sess, and renews its expiry, in one round trip: at most three commands
// whatever the number of lines (deletions are sent in chunks of
// MaxReleaseBatch fields).
func (s *Store) WriteLines(ctx context.Context, sess Session, set []string, del []string) error {
	if len(set)%2 != 0 {
		return errors.New("state: write lines: odd field list")
	}
	key := s.linesKey(sess.ID)
	pipe := s.rdb.Pipeline()
	if len(set) > 0 {
		args := make([]any, len(set))
		for i, v := range set {
			args[i] = v
		}
		pipe.HSet(ctx, key, args...)
	}
	for len(del) > 0 {
		n := min(len(del), MaxReleaseBatch)
		pipe.HDel(ctx, key, del[:n]...)
		del = del[n:]
	}
	pipe.PExpire(ctx, key, LinesTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("state: write lines: %w", err)
	}
	return nil
}

// DropLines deletes the lines hash of sess (its worker stopped).
func (s *Store) DropLines(ctx context.Context, sess Session) error {
	if err := s.rdb.Del(ctx, s.linesKey(sess.ID)).Err(); err != nil {
		return fmt.Errorf("state: drop lines: %w", err)
	}
	return nil
}

// linesOf queues on pipe the read of r's progress lines from the hash of
// the session holding it; the returned func stores them in r.Lines once
// pipe ran. It queues nothing and returns nil for a record no session
// holds, or without task checkpoints: it has none.
func (s *Store) linesOf(ctx context.Context, pipe redis.Pipeliner, r *Record) func() {
	kinds := r.TaskKinds()
	if r.Session == "" || len(kinds) == 0 {
		return nil
	}
	fields := make([]string, len(kinds))
	for i, k := range kinds {
		fields[i] = LineField(r.ID, k)
	}
	cmd := pipe.HMGet(ctx, s.linesKey(r.Session), fields...)
	return func() {
		vals, err := cmd.Result()
		if err != nil {
			return // lines are for people: without them, the checkpoints'
		}
		for i, v := range vals {
			if sv, ok := v.(string); ok {
				if r.Lines == nil {
					r.Lines = map[string]string{}
				}
				r.Lines[kinds[i]] = sv
			}
		}
	}
}
