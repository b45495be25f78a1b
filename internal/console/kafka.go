package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
)

// Kafka is what the console asks of Kafka. KafkaReader is the
// implementation; tests may pass their own.
type Kafka interface {
	// Lag is the consumer group's lag over the job topics.
	Lag(ctx context.Context) (*kafkaview.Lag, error)
	// DeadLetters reads the dead-letter topic: its size, its oldest
	// record and up to a bound of its newest records. Nil, nil when
	// dead-lettering is disabled.
	DeadLetters(ctx context.Context) (*DeadLetters, error)
	// Replay replays the dead letters sel chooses to their source topics
	// (kafkaview.Replayer: whole letters from a job topic only), or with
	// dry only counts them. ErrNoLetter: sel names a letter the DLQ does
	// not hold (any more).
	Replay(ctx context.Context, sel ReplaySelection, dry bool) (*ReplayResult, error)
}

// ReplaySelection chooses dead letters to replay: every letter with a
// reason, or one letter.
type ReplaySelection struct {
	Reason string
	Letter *kafkaview.Pos // one letter; Reason is then ignored
	// UpTo are the DLQ's end offsets the dry run read up to: letters that
	// arrived since are left out, so what was confirmed is what is
	// replayed. Nil: up to the end offsets now.
	UpTo map[int32]int64
}

// ReplayResult is what a replay did, or would do.
type ReplayResult struct {
	Topic        string
	DryRun       bool
	Matched      int // letters chosen
	Replayable   int // of which replayable (the dry-run count)
	Truncated    int // skipped: cut when dead-lettered
	RefusedTopic int // skipped: the source topic is not a job topic
	Skipped      int // every letter skipped (also without a source)
	// ByRefusedTopic names the refused source topics (quoted, printable).
	ByRefusedTopic map[string]int
	// Why says why a single letter is not replayable ("" when it is).
	Why      string
	Replayed int
	UpTo     map[int32]int64 // the end offsets read up to
}

// ErrNoLetter is Replay's answer for a letter the DLQ does not hold.
var ErrNoLetter = errors.New("the DLQ holds no such letter (retention may have removed it)")

// DeadLetters is what the dead-letter topic holds.
type DeadLetters struct {
	Topic   string
	Records int64     // every record retained
	Oldest  time.Time // the oldest retained record's time (zero: none)
	Read    int       // records read for the groups (the newest)
	// Replayable counts the letters read that a replay would re-produce
	// (whole, and from one of the job topics): the dry-run count.
	Replayable int
	Groups     []LetterGroup
}

// LetterGroup is the letters read that share a reason.
type LetterGroup struct {
	Reason     string // shown: "(no reason header)" when the letters have none
	Raw        string // the letters' reason header
	Count      int
	Replayable int
	Letters    []Letter // the newest few
}

// Letter is one dead letter, for display (its value cut to a preview).
type Letter struct {
	Partition  int32
	Offset     int64
	Time       time.Time
	Error      string
	Source     string // topic/partition@offset it came from
	ValueBytes int
	Preview    string
	Replayable bool
	Why        string // why it is not replayable
}

// KafkaConfig says where the fleet's topics are.
type KafkaConfig struct {
	Brokers []string
	// Opts are the client's security options (TLS, SASL).
	Opts []kgo.Opt
	// Group is the workers' consumer group.
	Group string
	// Topics are the job topics, or TopicRegex matches them.
	Topics     []string
	TopicRegex string
	// DLQTopic is the dead-letter topic ("" = disabled).
	DLQTopic string
	// ResultTopic is the summaries' topic: never replayed to, whatever
	// TopicRegex matches.
	ResultTopic string
	// MaxLetters bounds the newest dead letters read per refresh (default 500).
	MaxLetters int
}

// KafkaReader reads lag and dead letters with a client of its own that
// joins no group and commits nothing. Close it when done.
type KafkaReader struct {
	cfg KafkaConfig
	re  *regexp.Regexp
	jt  kafkaview.JobTopics // where a replay may produce
	cl  *kgo.Client
	adm *kadm.Client
}

// NewKafka returns a KafkaReader. It does not dial: an unreachable cluster
// shows on the pages, not here.
func NewKafka(cfg KafkaConfig) (*KafkaReader, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("console: KafkaConfig.Brokers is empty")
	}
	if cfg.MaxLetters <= 0 {
		cfg.MaxLetters = 500
	}
	k := &KafkaReader{cfg: cfg}
	if cfg.TopicRegex != "" {
		re, err := regexp.Compile(cfg.TopicRegex)
		if err != nil {
			return nil, fmt.Errorf("console: KafkaConfig.TopicRegex: %w", err)
		}
		k.re = re
	}
	k.jt = kafkaview.JobTopics{Topics: cfg.Topics, Regex: k.re, DLQ: cfg.DLQTopic, Result: cfg.ResultTopic}
	cl, err := k.client()
	if err != nil {
		return nil, err
	}
	k.cl, k.adm = cl, kadm.NewClient(cl)
	return k, nil
}

// Close closes the reader's client.
func (k *KafkaReader) Close() { k.cl.Close() }

func (k *KafkaReader) client(extra ...kgo.Opt) (*kgo.Client, error) {
	opts := append([]kgo.Opt{kgo.SeedBrokers(k.cfg.Brokers...), kgo.ClientID("analysisfleet-console"),
		kgo.DialTimeout(5 * time.Second), kgo.RetryTimeout(10 * time.Second)}, k.cfg.Opts...)
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("console: kafka client: %w", err)
	}
	return cl, nil
}

// Lag implements Kafka.
func (k *KafkaReader) Lag(ctx context.Context) (*kafkaview.Lag, error) {
	topics := k.cfg.Topics
	if k.re != nil {
		all, err := k.adm.ListTopics(ctx)
		if err != nil {
			return nil, fmt.Errorf("list topics: %w", err)
		}
		topics = nil
		for _, t := range all.Names() {
			if k.re.MatchString(t) && t != k.cfg.DLQTopic {
				topics = append(topics, t)
			}
		}
		sort.Strings(topics)
	}
	if len(topics) == 0 {
		return &kafkaview.Lag{}, nil
	}
	starts, err := k.adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := k.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	commits, err := k.adm.FetchOffsets(ctx, k.cfg.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("fetch committed offsets of %s: %w", k.cfg.Group, err)
	}
	return kafkaview.LagFrom(topics, commits, starts, ends), nil
}

// DeadLetters implements Kafka: the oldest record of each partition and
// up to MaxLetters of the newest (spread over the partitions).
func (k *KafkaReader) DeadLetters(ctx context.Context) (*DeadLetters, error) {
	topic := k.cfg.DLQTopic
	if topic == "" {
		return nil, nil
	}
	starts, err := k.adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	ends, err := k.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	n, err := kafkaview.CountRecords(topic, starts, ends)
	if err != nil {
		return nil, err
	}
	d := &DeadLetters{Topic: topic, Records: n}
	spans, err := kafkaview.Spans(ctx, k.cl, topic, "DLQ topic")
	if err != nil || len(spans) == 0 {
		return d, err
	}
	firsts, lasts := map[int32]kafkaview.Span{}, map[int32]kafkaview.Span{}
	per := int64(max(k.cfg.MaxLetters/len(spans), 1))
	for p, sp := range spans {
		firsts[p] = kafkaview.Span{Start: sp.Start, End: sp.Start + 1}
		lasts[p] = kafkaview.Span{Start: max(sp.Start, sp.End-per), End: sp.End}
	}
	err = kafkaview.Read(ctx, k.client, topic, firsts, func(r *kgo.Record) error {
		at := letterTime(r)
		if d.Oldest.IsZero() || at.Before(d.Oldest) {
			d.Oldest = at
		}
		return nil
	})
	if err != nil {
		return d, err
	}
	groups := map[string]*LetterGroup{}
	err = kafkaview.Read(ctx, k.client, topic, lasts, func(r *kgo.Record) error {
		d.Read++
		v := k.jt.Judge(r)
		l := v.Letter
		g := groups[l.Reason]
		if g == nil {
			g = &LetterGroup{Reason: cmp.Or(l.Reason, "(no reason header)"), Raw: l.Reason}
			groups[l.Reason] = g
		}
		g.Count++
		if v.Replayable {
			g.Replayable++
			d.Replayable++
		}
		src := l.SourceTopic
		if l.SourcePartition != nil && l.SourceOffset != nil {
			src = fmt.Sprintf("%s/%d@%d", src, *l.SourcePartition, *l.SourceOffset)
		}
		g.Letters = append(g.Letters, Letter{Partition: r.Partition, Offset: r.Offset, Time: letterTime(r),
			Error: l.Error, Source: src, ValueBytes: len(r.Value), Preview: preview(r.Value, 240),
			Replayable: v.Replayable, Why: v.Why})
		return nil
	})
	for _, g := range groups {
		sort.Slice(g.Letters, func(i, j int) bool { return g.Letters[i].Time.After(g.Letters[j].Time) })
		g.Letters = g.Letters[:min(len(g.Letters), 5)]
		d.Groups = append(d.Groups, *g)
	}
	sort.Slice(d.Groups, func(i, j int) bool {
		if d.Groups[i].Count != d.Groups[j].Count {
			return d.Groups[i].Count > d.Groups[j].Count
		}
		return d.Groups[i].Reason < d.Groups[j].Reason
	})
	return d, err
}

// Replay implements Kafka with kafkaview.Replayer, the one replay of the
// fleet (fleetctl dlq replay is the other caller).
func (k *KafkaReader) Replay(ctx context.Context, sel ReplaySelection, dry bool) (*ReplayResult, error) {
	topic := k.cfg.DLQTopic
	if topic == "" {
		return nil, errors.New("dead-lettering is disabled (KAFKA_DLQ_TOPIC is empty)")
	}
	spans, err := kafkaview.Spans(ctx, k.cl, topic, "DLQ topic")
	if err != nil {
		return nil, err
	}
	if sel.UpTo != nil {
		for p, sp := range spans {
			end, ok := sel.UpTo[p]
			if !ok {
				delete(spans, p)
				continue
			}
			sp.End = min(sp.End, end)
			if sp.End <= sp.Start {
				delete(spans, p)
				continue
			}
			spans[p] = sp
		}
	}
	res := &ReplayResult{Topic: topic, DryRun: dry, UpTo: map[int32]int64{}, ByRefusedTopic: map[string]int{}}
	for p, sp := range spans {
		res.UpTo[p] = sp.End
	}
	match := func(_ *kgo.Record, l intake.Letter) bool { return l.Reason == sel.Reason }
	if sel.Letter != nil {
		sp, ok := spans[sel.Letter.Partition]
		if !ok || sel.Letter.Offset < sp.Start || sel.Letter.Offset >= sp.End {
			return nil, ErrNoLetter
		}
		spans, match = kafkaview.Only(*sel.Letter), nil
	}
	rp := kafkaview.Replayer{DLQ: topic, Jobs: k.jt, NewClient: k.client}
	c, err := rp.Choose(ctx, spans, match, func(_ *kgo.Record, v kafkaview.Verdict) error {
		if sel.Letter != nil {
			res.Why = v.Why
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Matched, res.Replayable, res.Truncated, res.RefusedTopic, res.Skipped = c.Matched, c.Replayable, c.Truncated, c.RefusedTopic, c.Skipped
	for t, n := range c.ByRefusedTopic {
		res.ByRefusedTopic[kafkaview.QuoteTopic(t)] = n
	}
	if dry {
		return res, nil
	}
	res.Replayed, err = rp.Produce(ctx, c)
	if err != nil {
		return res, fmt.Errorf("replayed %d of %d before failing (replaying again is safe): %w", res.Replayed, res.Replayable, err)
	}
	return res, nil
}

func letterTime(r *kgo.Record) time.Time {
	if l := intake.DecodeLetter(r); !l.At.IsZero() {
		return l.At
	}
	return r.Timestamp
}

// preview renders the start of an untrusted value as printable text.
func preview(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&sb, "\\x%02x", b[0])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&sb, "\\x%02x", r)
		default:
			sb.WriteRune(r)
		}
		b = b[size:]
	}
	if cut {
		sb.WriteString("…")
	}
	return sb.String()
}
