package kafkaview

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
)

// Dead-letter replay, shared by `fleetctl dlq replay` and the web console:
// which letters may go back (Judge), which are chosen (Choose, the dry
// run), and producing them (Produce). A letter goes back only whole and
// only into one of the configured job topics: its dlq-source-topic is a
// header anyone who can write to the DLQ can set.

// JobTopics says which topics are the fleet's job topics: the ones a
// replay may produce to.
type JobTopics struct {
	// Topics are the job topics (KAFKA_TOPICS), unless Regex is set.
	Topics []string
	// Regex (KAFKA_TOPIC_REGEX, validated by the caller) matches them.
	Regex *regexp.Regexp
	// DLQ and Result are never job topics, whatever Regex matches.
	DLQ, Result string
}

// topicName is a legal Kafka topic name.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Contains reports whether topic is one of the job topics: named in
// Topics, or a legal topic name Regex matches (as the consumer matches it)
// that is neither the DLQ nor the result topic.
func (jt JobTopics) Contains(topic string) bool {
	if topic == "" || topic == jt.DLQ {
		return false
	}
	if jt.Regex == nil {
		return slices.Contains(jt.Topics, topic)
	}
	return topicName.MatchString(topic) && topic != jt.Result && jt.Regex.MatchString(topic)
}

// Verdict is whether one dead letter may be replayed.
type Verdict struct {
	Letter     intake.Letter
	Replayable bool
	// Truncated: part of the record was cut when dead-lettered; the
	// original cannot be rebuilt from the DLQ.
	Truncated bool
	// RefusedTopic: its source topic is not a job topic (never produced to).
	RefusedTopic bool
	// Why says why not, for people ("" when replayable).
	Why string
}

// Judge decides whether dead letter r may be replayed into jt.
func (jt JobTopics) Judge(r *kgo.Record) Verdict {
	l := intake.DecodeLetter(r)
	v := Verdict{Letter: l, Truncated: len(l.Truncated) > 0}
	switch {
	case v.Truncated && !slices.Equal(l.Truncated, []string{"value"}):
		parts := make([]string, len(l.Truncated))
		for i, p := range l.Truncated {
			parts[i] = Printable(p, 20)
		}
		v.Why = "truncated when dead-lettered (" + strings.Join(parts, ", ") + " cut)"
	case v.Truncated:
		v.Why = "truncated when dead-lettered"
	case l.SourceTopic == "":
		v.Why = "no " + intake.HeaderSourceTopic + " header"
	case l.SourceTopic == jt.DLQ:
		v.Why = "its source is the DLQ topic itself"
	case !jt.Contains(l.SourceTopic):
		v.RefusedTopic = true
		v.Why = fmt.Sprintf("its source topic %s is not a job topic", QuoteTopic(l.SourceTopic))
	default:
		v.Replayable = true
	}
	return v
}

// QuoteTopic renders a topic name from a header for people: quoted,
// control characters escaped, cut to a topic name's longest.
func QuoteTopic(t string) string {
	const maxTopic = 249 // Kafka's longest topic name
	if len(t) > maxTopic {
		return strconv.Quote(strings.ToValidUTF8(t[:maxTopic], "")) + "…"
	}
	return strconv.Quote(t)
}

// Printable renders an untrusted header value as printable text of at
// most n runes (then "…"): control and invalid characters escaped.
func Printable(s string, n int) string {
	var b strings.Builder
	i := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if i == n {
			b.WriteString("…")
			break
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i++
	}
	return b.String()
}

// Pos is a dead letter's place in the DLQ topic.
type Pos struct {
	Partition int32
	Offset    int64
}

func (p Pos) String() string { return fmt.Sprintf("%d@%d", p.Partition, p.Offset) }

// Replayer replays the dead letters of one DLQ topic into the job topics.
type Replayer struct {
	DLQ  string
	Jobs JobTopics
	// NewClient makes a client with the fleet's brokers and security
	// options plus the given ones.
	NewClient func(...kgo.Opt) (*kgo.Client, error)
}

// Choice is what a replay would do (the dry run): the letters read, those
// the selection matched, and of these the replayable ones, remembered by
// position so Produce re-produces exactly them.
type Choice struct {
	Read       int // letters read within the spans
	Matched    int // letters the selection matched
	Replayable int
	Skipped    int // matched but not replayable
	Truncated  int // of the skipped: cut when dead-lettered
	// RefusedTopic counts the skipped letters whose source topic is not a
	// job topic; ByRefusedTopic per such topic, ByTopic the replayable
	// letters per source topic.
	RefusedTopic   int
	ByRefusedTopic map[string]int
	ByTopic        map[string]int

	spans  map[int32]Span
	chosen map[Pos]bool
}

// Choose reads the DLQ within spans (Spans captures them: the dry run and
// Produce read the same letters, never ones that arrive later) and
// chooses the letters match accepts that may be replayed. each, if not
// nil, sees every matched letter with its verdict.
func (rp Replayer) Choose(ctx context.Context, spans map[int32]Span, match func(*kgo.Record, intake.Letter) bool,
	each func(*kgo.Record, Verdict) error) (*Choice, error) {
	c := &Choice{ByRefusedTopic: map[string]int{}, ByTopic: map[string]int{}, spans: spans, chosen: map[Pos]bool{}}
	err := Read(ctx, rp.NewClient, rp.DLQ, spans, func(r *kgo.Record) error {
		c.Read++
		v := rp.Jobs.Judge(r)
		if match != nil && !match(r, v.Letter) {
			return nil
		}
		c.Matched++
		switch {
		case v.Replayable:
			c.Replayable++
			c.ByTopic[v.Letter.SourceTopic]++
			c.chosen[Pos{r.Partition, r.Offset}] = true
		case v.Truncated:
			c.Skipped++
			c.Truncated++
		case v.RefusedTopic:
			c.Skipped++
			c.RefusedTopic++
			c.ByRefusedTopic[v.Letter.SourceTopic]++
		default:
			c.Skipped++
		}
		if each != nil {
			return each(r, v)
		}
		return nil
	})
	return c, err
}

// Only returns the span of one letter, for choosing it alone.
func Only(p Pos) map[int32]Span {
	return map[int32]Span{p.Partition: {Start: p.Offset, End: p.Offset + 1}}
}

// Produce re-reads the chosen letters and writes each record back to its
// source topic (intake.ReplayRecord: original key, value and non-dlq
// headers, plus dlq-replayed-from). A letter is judged again as it is
// read: a refused one is never produced. It returns how many were
// produced, also when it fails part way (replaying again is safe:
// admission is idempotent by job ID).
func (rp Replayer) Produce(ctx context.Context, c *Choice) (int, error) {
	if c.Replayable == 0 {
		return 0, nil
	}
	prod, err := rp.NewClient(kgo.ProducerLinger(0))
	if err != nil {
		return 0, err
	}
	defer prod.Close()
	replayed := 0
	var batch []*kgo.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		res := prod.ProduceSync(ctx, batch...)
		for _, pr := range res {
			if pr.Err == nil {
				replayed++
			}
		}
		batch = batch[:0]
		if err := res.FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		return nil
	}
	err = Read(ctx, rp.NewClient, rp.DLQ, c.spans, func(r *kgo.Record) error {
		if !c.chosen[Pos{r.Partition, r.Offset}] {
			return nil
		}
		v := rp.Jobs.Judge(r)
		if !v.Replayable { // read again: the same letter, but never produce a refused one
			return nil
		}
		batch = append(batch, intake.ReplayRecord(r, v.Letter, rp.DLQ))
		if len(batch) >= 500 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return replayed, err
}

// IdempotenceNote says why replaying twice is harmless.
const IdempotenceNote = "A replayed record whose job already ran is dropped by the ledger (admission is idempotent by job ID), " +
	"so replaying twice is harmless. A record that is still invalid goes back to the DLQ."
