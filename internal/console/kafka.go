package console

import (
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
}

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
	Reason     string
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
	// MaxLetters bounds the newest dead letters read per refresh (default 500).
	MaxLetters int
}

// KafkaReader reads lag and dead letters with a client of its own that
// joins no group and commits nothing. Close it when done.
type KafkaReader struct {
	cfg KafkaConfig
	re  *regexp.Regexp
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
		l := intake.DecodeLetter(r)
		reason := l.Reason
		if reason == "" {
			reason = "(no reason header)"
		}
		g := groups[reason]
		if g == nil {
			g = &LetterGroup{Reason: reason}
			groups[reason] = g
		}
		g.Count++
		if len(l.Truncated) == 0 && k.isJobTopic(l.SourceTopic) {
			g.Replayable++
			d.Replayable++
		}
		src := l.SourceTopic
		if l.SourcePartition != nil && l.SourceOffset != nil {
			src = fmt.Sprintf("%s/%d@%d", src, *l.SourcePartition, *l.SourceOffset)
		}
		g.Letters = append(g.Letters, Letter{Partition: r.Partition, Offset: r.Offset, Time: letterTime(r),
			Error: l.Error, Source: src, ValueBytes: len(r.Value), Preview: preview(r.Value, 240)})
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

// isJobTopic reports whether a letter's source topic is one of the job
// topics (the only ones a replay produces to; the header is anyone's to set).
func (k *KafkaReader) isJobTopic(t string) bool {
	if t == "" || t == k.cfg.DLQTopic {
		return false
	}
	if k.re != nil {
		return k.re.MatchString(t)
	}
	for _, x := range k.cfg.Topics {
		if x == t {
			return true
		}
	}
	return false
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
