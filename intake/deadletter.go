package intake

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The dead-letter format, written by intake and read by fleetctl and the
// console (through internal/kafkaview, which holds the one replay): one
// codec (EncodeLetter, DecodeLetter, ReplayRecord) so they cannot drift.

// Dead-letter headers.
const (
	HeaderReason          = "dlq-reason"
	HeaderError           = "dlq-error"
	HeaderSourceTopic     = "dlq-source-topic"
	HeaderSourcePartition = "dlq-source-partition"
	HeaderSourceOffset    = "dlq-source-offset"
	HeaderSourceTimestamp = "dlq-source-timestamp"
	HeaderWorker          = "dlq-worker"
	HeaderTime            = "dlq-time"
	// HeaderTruncated lists the parts of the record that were cut to make
	// the letter fit, in this order: "key", "value", "headers" (e.g.
	// "key,headers"). A cut key or value is a prefix of the original; cut
	// headers are left out whole (the ones that fit are copied). Letters
	// written before this format hold the original value size instead.
	HeaderTruncated = "dlq-truncated"
	// HeaderOriginalSizes, beside HeaderTruncated, gives the original
	// record's sizes: "key=N,value=N,headers=N,header-bytes=N" (bytes of
	// key and value, the number of headers, and the bytes of their keys and
	// values).
	HeaderOriginalSizes = "dlq-original-sizes"
)

// Caps on what a dead letter copies of the record, below the producer's
// record limit (a letter must always fit, or the record can be neither
// dead-lettered nor committed and the partition stalls).
const (
	// dlqValueCap bounds the value copied into a dead letter.
	dlqValueCap = 64 << 10
	// dlqKeyCap bounds the key copied (a job record's key is its job ID).
	dlqKeyCap = 4 << 10
	// dlqHeadersCap bounds the headers copied, keys and values together;
	// a header that does not fit is left out whole.
	dlqHeadersCap = 16 << 10
	// dlqErrorCap bounds the dlq-error header (Validate's error text).
	dlqErrorCap = 1 << 10
	// letterOverhead is the most a record batch of one record takes
	// besides the key, value and headers (the v2 batch header and the
	// record's widest varints), with room to spare; headerOverhead is the
	// same for one header (its two length varints).
	letterOverhead = 128
	headerOverhead = 10
	// truncationReserve is room for HeaderTruncated and
	// HeaderOriginalSizes, which are added after the budget is split.
	truncationReserve = 256
)

// EncodeLetter builds the dead letter of record r for the DLQ topic: the
// record's key, value and headers, cut so that the letter fits limit (the
// producer's record limit) with our own headers, then those headers (l's
// why, r's where from, what was cut). A limit of 0 copies nothing of the
// record. It is the one writer of the format DecodeLetter reads.
func EncodeLetter(r *kgo.Record, l Letter, topic string, limit int) *kgo.Record {
	detail := l.Error
	if len(detail) > dlqErrorCap {
		detail = strings.ToValidUTF8(detail[:dlqErrorCap], "") + "…"
	}
	own := []kgo.RecordHeader{
		{Key: HeaderReason, Value: []byte(l.Reason)},
		{Key: HeaderError, Value: []byte(detail)},
		{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		{Key: HeaderSourceTimestamp, Value: []byte(r.Timestamp.UTC().Format(time.RFC3339Nano))},
		{Key: HeaderWorker, Value: []byte(l.Worker)},
		{Key: HeaderTime, Value: []byte(l.At.UTC().Format(time.RFC3339Nano))},
	}
	// Split what is left of the limit: half for the value, a quarter each
	// for the key and the headers.
	budget := limit - letterOverhead - truncationReserve - headersSize(own)
	keyCap, hdrCap, valCap := min(dlqKeyCap, budget/4), min(dlqHeadersCap, budget/4), min(dlqValueCap, budget/2)
	if budget <= 0 {
		keyCap, hdrCap, valCap = 0, 0, 0
	}

	var cut []string
	key := r.Key
	if len(key) > keyCap {
		key, cut = key[:keyCap], append(cut, "key")
	}
	value := r.Value
	if len(value) > valCap {
		value, cut = value[:valCap], append(cut, "value")
	}
	var headers []kgo.RecordHeader
	used, dropped := 0, false
	for _, h := range r.Headers {
		if strings.HasPrefix(h.Key, "dlq-") && h.Key != HeaderReplayedFrom {
			continue // an earlier letter's headers: ours below are the ones that count
		}
		n := headerOverhead + len(h.Key) + len(h.Value)
		if used+n > hdrCap {
			dropped = true
			continue
		}
		used += n
		headers = append(headers, h)
	}
	if dropped {
		cut = append(cut, "headers")
	}
	if len(cut) > 0 {
		headerBytes := 0
		for _, h := range r.Headers {
			headerBytes += len(h.Key) + len(h.Value)
		}
		headers = append(headers,
			kgo.RecordHeader{Key: HeaderTruncated, Value: []byte(strings.Join(cut, ","))},
			kgo.RecordHeader{Key: HeaderOriginalSizes, Value: fmt.Appendf(nil, "key=%d,value=%d,headers=%d,header-bytes=%d",
				len(r.Key), len(r.Value), len(r.Headers), headerBytes)})
	}
	headers = append(headers, own...)
	return &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers}
}

func headersSize(hs []kgo.RecordHeader) int {
	n := 0
	for _, h := range hs {
		n += headerOverhead + len(h.Key) + len(h.Value)
	}
	return n
}

// letterSize is the most r takes in a record batch of its own.
func letterSize(r *kgo.Record) int {
	return letterOverhead + len(r.Key) + len(r.Value) + headersSize(r.Headers)
}

// HeaderReplayedFrom marks a record re-produced from the DLQ, by fleetctl
// or the console: "<dlq topic>/<partition>@<offset>". If the record is
// dead-lettered again, its letter keeps the header, so a letter that keeps
// coming back is easy to spot.
const HeaderReplayedFrom = "dlq-replayed-from"

// Letter is what a dead letter says about its record.
type Letter struct {
	Reason string // one of job's Reason constants
	Error  string // the human explanation
	// Source is where the record was consumed; SourcePartition and
	// SourceOffset are nil when the headers did not say.
	SourceTopic     string
	SourcePartition *int32
	SourceOffset    *int64
	SourceTime      time.Time
	Worker          string    // who dead-lettered it
	At              time.Time // when
	// Truncated lists the parts cut to make the letter fit ("key", "value",
	// "headers"); Original the record's sizes then (OriginalKnown says the
	// letter said; a letter of the older format names the value only).
	Truncated     []string
	Original      Sizes
	OriginalKnown bool
	ReplayedFrom  string
}

// Sizes are a record's byte counts.
type Sizes struct {
	Key, Value, Headers, HeaderBytes int
}

// DecodeLetter reads a dead letter's headers. Unknown or malformed headers
// are ignored: a letter is read, never refused.
func DecodeLetter(r *kgo.Record) Letter {
	var l Letter
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderReason:
			l.Reason = v
		case HeaderError:
			l.Error = v
		case HeaderSourceTopic:
			l.SourceTopic = v
		case HeaderSourcePartition:
			if p, err := strconv.ParseInt(v, 10, 32); err == nil {
				p32 := int32(p)
				l.SourcePartition = &p32
			}
		case HeaderSourceOffset:
			if o, err := strconv.ParseInt(v, 10, 64); err == nil {
				l.SourceOffset = &o
			}
		case HeaderSourceTimestamp:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				l.SourceTime = t
			}
		case HeaderWorker:
			l.Worker = v
		case HeaderTime:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				l.At = t
			}
		case HeaderTruncated:
			if n, err := strconv.Atoi(v); err == nil {
				// The older format: the original value's size.
				l.Truncated, l.Original.Value, l.OriginalKnown = []string{"value"}, n, true
				continue
			}
			l.Truncated = nil
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" && len(l.Truncated) < 3 {
					l.Truncated = append(l.Truncated, p)
				}
			}
		case HeaderOriginalSizes:
			for _, kv := range strings.Split(v, ",") {
				k, val, _ := strings.Cut(kv, "=")
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					continue
				}
				l.OriginalKnown = true
				switch k {
				case "key":
					l.Original.Key = n
				case "value":
					l.Original.Value = n
				case "headers":
					l.Original.Headers = n
				case "header-bytes":
					l.Original.HeaderBytes = n
				}
			}
		case HeaderReplayedFrom:
			l.ReplayedFrom = v
		}
	}
	return l
}

// ReplayRecord is the record dead letter r (DLQ topic dlqTopic) is replayed
// as: its original key, value and non-dlq headers, to its source topic,
// plus HeaderReplayedFrom. The caller decides whether the source topic may
// be produced to (it is a header anyone who can write the DLQ can set).
func ReplayRecord(r *kgo.Record, l Letter, dlqTopic string) *kgo.Record {
	var hs []kgo.RecordHeader
	for _, h := range r.Headers {
		if !strings.HasPrefix(h.Key, "dlq-") {
			hs = append(hs, h)
		}
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderReplayedFrom,
		Value: []byte(fmt.Sprintf("%s/%d@%d", dlqTopic, r.Partition, r.Offset))})
	return &kgo.Record{Topic: l.SourceTopic, Key: r.Key, Value: r.Value, Headers: hs}
}
