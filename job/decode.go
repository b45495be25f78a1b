package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
)

// Reasons a record is dead-lettered (header dlq-reason).
const (
	ReasonOversized    = "oversized"
	ReasonNotJSON      = "not_json"
	ReasonWrongType    = "wrong_field_type"
	ReasonMissingJobID = "missing_job_id"
	ReasonInvalidJobID = "invalid_job_id"
	ReasonInvalidHash  = "invalid_sample_hash"
	ReasonInvalidField = "invalid_field"
	ReasonEmptyRecord  = "empty_record"
	// ReasonAmbiguousField: a field the fleet reads appears more than once
	// (the same key twice, or spellings encoding/json takes for the same
	// field, such as jobID and JOBID). encoding/json would read the last
	// one; another reader may read the first: the record means two things.
	ReasonAmbiguousField = "ambiguous_field"
)

// BadRecord says why a record cannot be a job.
type BadRecord struct {
	Reason string // one of the Reason constants
	Detail string // human explanation; never contains the record's bytes
}

func (b *BadRecord) Error() string { return b.Reason + ": " + b.Detail }

var uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Decode decodes and validates a job-creation message exactly as SampleDB
// posts it: a JSON object with a UUID jobID, a submission whose sample id is
// a SHA-256 (64 hex digits; never escaped, refused), and the fields the
// fleet reads (the submission's customer, sample, name and metaData, the
// classification's sample, type and platform) of their documented types.
// A field the fleet reads may appear only once, under one spelling (see
// ReasonAmbiguousField). Fields the fleet never reads may come in any shape (the document shows
// createdByUser.customer as null; a producer may send an object), and
// unknown fields are ignored (forward compatibility): neither dead-letters
// a message. It returns a *BadRecord for anything else.
//
// The message's JobID is canonical: a UUID names one job whatever its case,
// so it is lower-cased (CanonicalID), and the ledger, SampleDB
// and the vendors all see the one form.
func Decode(value []byte, maxBytes int) (*Message, error) {
	msg, _, err := DecodeRecord(value, maxBytes)
	return msg, err
}

// DecodeRecord is Decode that also returns the value as the ledger keeps it:
// the record's value without surrounding white space, with the jobID
// written in its canonical form; every other byte as it came.
func DecodeRecord(value []byte, maxBytes int) (*Message, []byte, error) {
	msg, err := decodeValue(value, maxBytes)
	if err != nil {
		return nil, nil, err
	}
	trimmed := bytes.TrimSpace(value)
	msg.JobID = CanonicalID(msg.JobID)
	return msg, withJobID(trimmed, msg.JobID), nil
}

func decodeValue(value []byte, maxBytes int) (*Message, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return nil, &BadRecord{ReasonOversized, fmt.Sprintf("%d bytes exceeds MAX_MESSAGE_BYTES (%d)", len(value), maxBytes)}
	}
	trimmed := bytes.TrimSpace(value)
	if len(trimmed) == 0 {
		return nil, &BadRecord{ReasonEmptyRecord, "record has no value"}
	}
	if !json.Valid(trimmed) {
		return nil, &BadRecord{ReasonNotJSON, "value is not valid JSON"}
	}
	if trimmed[0] != '{' {
		return nil, &BadRecord{ReasonWrongType, "value is JSON but not an object"}
	}
	if bad := ambiguity(trimmed, "", readFields); bad != nil {
		return nil, bad
	}
	msg, err := parse(trimmed)
	if err != nil {
		return nil, err
	}
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	return msg, nil
}

// Validate checks what the fleet relies on: a UUID jobID and a
// submission whose sample id is a SHA-256 (the classification's too, when
// it names one, and the same). It returns a *BadRecord.
func (msg *Message) Validate() error {
	if msg.JobID == "" {
		return &BadRecord{ReasonMissingJobID, "jobID is missing or empty"}
	}
	if !uuidRe.MatchString(msg.JobID) {
		return &BadRecord{ReasonInvalidJobID, "jobID is not a UUID"}
	}
	if msg.Submission.Sample.ID == "" {
		return &BadRecord{ReasonInvalidHash, "submission.sample.id is missing"}
	}
	sha, err := edr.ValidSHA256(msg.Submission.Sample.ID)
	if err != nil {
		return &BadRecord{ReasonInvalidHash, "submission.sample.id is not a SHA-256 (64 hexadecimal digits)"}
	}
	if c := msg.Classification.Sample; c != "" {
		csha, err := edr.ValidSHA256(c)
		if err != nil {
			return &BadRecord{ReasonInvalidHash, "classification.sample is not a SHA-256 (64 hexadecimal digits)"}
		}
		if csha != sha {
			return &BadRecord{ReasonInvalidHash, "classification.sample differs from submission.sample.id"}
		}
	}
	return nil
}

// withJobID returns the JSON object b with the value of its jobID member
// (the one encoding/json reads: the last key that matches "jobID" the way
// it matches keys) replaced by the JSON string id, or b itself when that
// value already is exactly that string.
func withJobID(b []byte, id string) []byte {
	start, end := -1, -1
	_ = members(b, func(key []byte, s, e int) error {
		if sameField(key, "jobID") {
			start, end = s, e
		}
		return nil
	})
	want := `"` + id + `"` // a canonical UUID needs no escaping
	if start < 0 || string(b[start:end]) == want {
		return b
	}
	out := make([]byte, 0, len(b)-(end-start)+len(want))
	out = append(out, b[:start]...)
	out = append(out, want...)
	return append(out, b[end:]...)
}

func trimError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "json: ")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Parse decodes a job message without validating it: the fields the fleet
// reads strictly typed, the rest leniently, numbers in metaData exact. For
// reading what is there (fleetctl); the fleet acts only on what Decode
// accepted.
func Parse(b []byte) (*Message, error) {
	return parse(bytes.TrimSpace(b))
}

func parse(trimmed []byte) (*Message, error) {
	var msg Message
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&msg); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				field = "(top level)"
			}
			// te.Value is "number 1.5" for numbers: keep the kind only, the
			// digits are the record's bytes (and may be a megabyte long).
			kind, _, _ := strings.Cut(te.Value, " ")
			return nil, &BadRecord{ReasonWrongType, fmt.Sprintf("field %s: want %s, got JSON %s", field, te.Type, kind)}
		}
		return nil, &BadRecord{ReasonNotJSON, "cannot decode: " + trimError(err)}
	}
	return &msg, nil
}
