// Package results publishes the summary of every finished job — its state,
// and per task what the vendor found (rows, hosts, files, notes) — to the
// result topic (Sample.Analysis.Result, key = job ID). Summary is the
// record's schema; Encode bounds every field so a summary always fits a
// Kafka record; Publisher produces with a client of its own.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// Summary is what the result topic receives for every finished job.
type Summary struct {
	JobID      string        `json:"jobID"`
	State      string        `json:"state"`
	Reason     string        `json:"reason,omitempty"`
	SHA256     string        `json:"sha256,omitempty"`
	Platform   string        `json:"platform,omitempty"`
	Customer   string        `json:"customer,omitempty"`
	Worker     string        `json:"worker"`
	Admitted   int64         `json:"admitted"` // unix ms
	Finished   int64         `json:"finished"` // unix ms
	Tasks      []TaskSummary `json:"tasks"`
	Resumed    bool          `json:"resumed,omitempty"`
	Generation int64         `json:"token"`
	// Truncated says lists were cut to keep the summary under
	// MaxSummaryBytes (counts are kept).
	Truncated bool `json:"truncated,omitempty"`
}

// TaskSummary is one task of a Summary.
type TaskSummary struct {
	Kind   string      `json:"kind"`
	State  string      `json:"state"`
	TaskID sampledb.ID `json:"taskId,omitempty"`
	Result *edr.Result `json:"result,omitempty"`
	Error  string      `json:"error,omitempty"`
	Cancel string      `json:"cancel,omitempty"`
}

// Summary caps: every field is bounded, so a summary always fits a Kafka
// record (a vendor's 64 KB error text or a thousand notes cannot make one
// unpublishable).
const (
	// MaxSummaryBytes bounds an encoded summary; lists are dropped (their
	// counts kept) until it fits.
	MaxSummaryBytes = 256 << 10
	// MaxSummaryText bounds a reason, an error, a cancel note.
	MaxSummaryText = 2048
	// MaxSummaryNotes bounds a task's notes (more are counted).
	MaxSummaryNotes = 20
	// MaxSummaryItem bounds one note, host or path.
	MaxSummaryItem = 512
)

// ErrNotPublishable is wrapped by Publish's error when asking again cannot
// help (the record is refused as too large or invalid).
var ErrNotPublishable = errors.New("summary cannot be published")

// Encode bounds s's texts and lists and encodes it. It reports whether
// lists had to be dropped to fit MaxSummaryBytes.
func Encode(s *Summary) ([]byte, bool) { return EncodeWithin(s, MaxSummaryBytes) }

// EncodeWithin is Encode with another bound than MaxSummaryBytes.
func EncodeWithin(s *Summary, max int) ([]byte, bool) {
	s.Reason = textfmt.Clip(s.Reason, MaxSummaryText)
	for i := range s.Tasks {
		t := &s.Tasks[i]
		t.Error, t.Cancel = textfmt.Clip(t.Error, MaxSummaryText), textfmt.Clip(t.Cancel, MaxSummaryText)
		if t.Result == nil {
			continue
		}
		r := *t.Result // the checkpoint's copy stays whole
		if len(r.Notes) > MaxSummaryNotes {
			r.Notes = append(r.Notes[:MaxSummaryNotes:MaxSummaryNotes], fmt.Sprintf("… %d more notes", len(r.Notes)-MaxSummaryNotes))
		} else {
			r.Notes = append([]string(nil), r.Notes...)
		}
		for i, n := range r.Notes {
			r.Notes[i] = textfmt.Clip(n, MaxSummaryItem)
		}
		r.Hosts = append([]string(nil), r.Hosts...)
		for i, h := range r.Hosts {
			r.Hosts[i] = textfmt.Clip(h, MaxSummaryItem)
		}
		r.Files = append([]edr.File(nil), r.Files...)
		for i := range r.Files {
			r.Files[i].Host, r.Files[i].Path = textfmt.Clip(r.Files[i].Host, MaxSummaryItem), textfmt.Clip(r.Files[i].Path, MaxSummaryItem)
		}
		t.Result = &r
	}
	b, _ := json.Marshal(s)
	if len(b) <= max {
		return b, false
	}
	s.Truncated = true
	for i := range s.Tasks {
		if r := s.Tasks[i].Result; r != nil {
			r.Hosts, r.Files, r.Notes = nil, nil, nil
		}
	}
	b, _ = json.Marshal(s)
	return b, true
}

// DefaultTopic receives the summaries.
const DefaultTopic = "Sample.Analysis.Result"

// Config configures a Publisher.
type Config struct {
	Brokers []string
	// Topic receives the summaries (DefaultTopic if empty).
	Topic string
	// Opts are extra client options (TLS, SASL, hooks).
	Opts []kgo.Opt
}

// Publisher produces job summaries to the result topic with a producer of
// its own (so intake's consumer group never waits on it). Safe for
// concurrent use.
type Publisher struct {
	cl    *kgo.Client
	topic string
}

// New returns a Publisher.
func New(cfg Config) (*Publisher, error) {
	topic := cfg.Topic
	if topic == "" {
		topic = DefaultTopic
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(MaxSummaryBytes + 64<<10), kgo.RecordRetries(10)}, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return &Publisher{cl: cl, topic: topic}, nil
}

// Publish produces an encoded summary (Encode) under key, the job ID. An
// error wrapping ErrNotPublishable will not go away by asking again.
func (p *Publisher) Publish(ctx context.Context, key string, value []byte) error {
	err := p.cl.ProduceSync(ctx, &kgo.Record{Topic: p.topic, Key: []byte(key), Value: value}).FirstErr()
	var ke *kerr.Error
	if errors.As(err, &ke) && !ke.Retriable {
		return fmt.Errorf("%w: %w", ErrNotPublishable, err)
	}
	return err
}

// Close flushes nothing more and closes the producer.
func (p *Publisher) Close() { p.cl.Close() }
