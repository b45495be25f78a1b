// Package kafkaview reads what operators look at in the fleet's Kafka
// topics, for fleetctl and the web console: the consumer group's lag over
// the job topics, how many records a topic retains, and reading a bounded
// span of a topic (the dead letters) with a direct consumer that joins no
// group and commits nothing.
package kafkaview

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Lag is a consumer group's lag over topics.
type Lag struct {
	Topics []TopicLag `json:"topics"`
	Total  int64      `json:"total"`
}

// TopicLag is the lag on one topic.
type TopicLag struct {
	Topic      string         `json:"topic"`
	Lag        int64          `json:"lag"`
	Partitions []PartitionLag `json:"partitions"`
	Error      string         `json:"error,omitempty"`
}

// PartitionLag is the lag on one partition.
type PartitionLag struct {
	Partition int32 `json:"partition"`
	Committed int64 `json:"committed"` // -1: nothing committed (a new group starts at the earliest offset)
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	Lag       int64 `json:"lag"`
}

// LagFrom computes the group's lag on every partition of the job topics, as
// kadm's Lag does, but also for partitions the group never committed and
// nobody is assigned: a new group starts at the earliest offset, so all of
// such a partition is lag.
func LagFrom(topics []string, commits kadm.OffsetResponses, starts, ends kadm.ListedOffsets) *Lag {
	rep := &Lag{Topics: []TopicLag{}}
	for _, t := range topics {
		tl := TopicLag{Topic: t, Partitions: []PartitionLag{}}
		pe, ok := ends[t]
		if _, missing := pe[-1]; !ok || missing || len(pe) == 0 {
			tl.Error = "topic not found"
			rep.Topics = append(rep.Topics, tl)
			continue
		}
		ps := make([]int32, 0, len(pe))
		for p := range pe {
			ps = append(ps, p)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		for _, p := range ps {
			end := pe[p]
			if end.Err != nil {
				tl.Error = fmt.Sprintf("partition %d: %v", p, end.Err)
				continue
			}
			pl := PartitionLag{Partition: p, Committed: -1, End: end.Offset}
			if s, ok := starts.Lookup(t, p); ok && s.Err == nil {
				pl.Start = s.Offset
			}
			from := pl.Start
			if cm, ok := commits.Lookup(t, p); ok && cm.Err == nil && cm.At >= 0 {
				pl.Committed = cm.At
				from = max(cm.At, pl.Start)
			}
			pl.Lag = max(pl.End-from, 0)
			tl.Lag += pl.Lag
			tl.Partitions = append(tl.Partitions, pl)
		}
		rep.Total += tl.Lag
		rep.Topics = append(rep.Topics, tl)
	}
	return rep
}

// CountRecords is how many records topic retains (end minus start offsets).
func CountRecords(topic string, starts, ends kadm.ListedOffsets) (int64, error) {
	pe, ok := ends[topic]
	if _, missing := pe[-1]; !ok || missing || len(pe) == 0 {
		return 0, fmt.Errorf("topic %s not found", topic)
	}
	var n int64
	for p, e := range pe {
		if e.Err != nil {
			return 0, fmt.Errorf("topic %s partition %d: %w", topic, p, e.Err)
		}
		start := int64(0)
		if s, ok := starts.Lookup(topic, p); ok && s.Err == nil {
			start = s.Offset
		}
		n += max(e.Offset-start, 0)
	}
	return n, nil
}

// Span is the part of one partition to read: [Start, End).
type Span struct{ Start, End int64 }

// Spans captures topic's offsets now (the partitions holding records):
// every read ends at these end offsets, so a reader never waits for
// records that arrive later. what names the topic in errors ("DLQ topic").
func Spans(ctx context.Context, cl *kgo.Client, topic, what string) (map[int32]Span, error) {
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	pe := ends[topic]
	if _, missing := pe[-1]; missing || len(pe) == 0 {
		return nil, fmt.Errorf("the %s %s does not exist", what, topic)
	}
	out := map[int32]Span{}
	for p, e := range pe {
		if e.Err != nil {
			return nil, fmt.Errorf("list offsets of %s partition %d: %w", topic, p, e.Err)
		}
		s := Span{End: e.Offset}
		if so, ok := starts.Lookup(topic, p); ok && so.Err == nil {
			s.Start = so.Offset
		}
		if s.End > s.Start {
			out[p] = s
		}
	}
	return out, nil
}

// Read calls fn for every record of topic within spans, partition by
// partition in offset order (partitions interleaved). It uses a direct
// consumer: no group, no commits. It returns when every span is read.
func Read(ctx context.Context, newClient func(...kgo.Opt) (*kgo.Client, error), topic string, spans map[int32]Span, fn func(*kgo.Record) error) error {
	if len(spans) == 0 {
		return nil
	}
	at := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, s := range spans {
		at[p] = kgo.NewOffset().At(s.Start)
		left[p] = s.End
	}
	cl, err := newClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: at}),
		// Control records keep the offsets contiguous, so a partition
		// whose last record is a transaction marker still reaches its end.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %s: %w", topic, err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			var loss *kgo.ErrDataLoss
			if ferr == nil && !errors.As(err, &loss) { // data loss: retention moved the start; go on
				ferr = fmt.Errorf("reading %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				continue
			}
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}
