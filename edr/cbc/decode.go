package cbc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// errMalformed marks a vendor answer the driver cannot understand. It is
// permanent: asking again returns the same bytes.
var errMalformed = errors.New("malformed response")

// jobIDRe bounds what a job ID may look like: it is interpolated into URL
// paths. The document shows a number (4522); strings of the same alphabet
// are accepted in case the service ever sends one.
var jobIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ref is the checkpointed operation reference. The org key, base URL and
// credentials come from the driver's Config, so a worker configured for the
// same tenant can re-attach with this alone.
type ref struct {
	ID string `json:"id"`
}

// decodeStart reads the job ID from the start response
// {"id":4522,"type":"event_export","status":"CREATED",...}. The ID may be a
// JSON number or string; unknown fields are ignored.
func decodeStart(body []byte) (string, error) {
	var resp struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return "", fmt.Errorf("%w: start response is not a JSON object: %s", errMalformed, jsonErr(err))
	}
	id, err := jobID(resp.ID)
	if err != nil {
		return "", fmt.Errorf("%w: start response: %w", errMalformed, err)
	}
	return id, nil
}

// parseRef reads a checkpointed reference, tolerating a numeric id.
func parseRef(raw []byte) (string, error) {
	var r struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", errors.New("operation reference is not a JSON object")
	}
	return jobID(r.ID)
}

// jobID accepts a JSON number (an integer) or a string of jobIDRe.
func jobID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("job id missing")
	}
	var id string
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", errors.New("job id is not a valid string")
		}
		id = strings.TrimSpace(id)
	default:
		n, ok := integer(raw)
		if !ok {
			return "", errors.New("job id is neither an integer nor a string")
		}
		id = strconv.FormatInt(n, 10)
	}
	if !jobIDRe.MatchString(id) {
		return "", errors.New("job id has unexpected characters")
	}
	return id, nil
}

// progress is the decoded Get Job Progress answer.
type progress struct {
	Total, Completed int64
	Message          string // upper-cased, trimmed, sanitised
}

// decodeProgress reads {"num_total":100000,"num_completed":100000,
// "message":"FINISHED"}. Counters may be numbers or numeric strings and may be
// absent; message is required (it is the job's state).
func decodeProgress(body []byte) (progress, error) {
	var resp struct {
		NumTotal     json.RawMessage `json:"num_total"`
		NumCompleted json.RawMessage `json:"num_completed"`
		Message      json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return progress{}, fmt.Errorf("%w: progress response is not a JSON object: %s", errMalformed, jsonErr(err))
	}
	var msg string
	if len(resp.Message) == 0 || json.Unmarshal(resp.Message, &msg) != nil || strings.TrimSpace(msg) == "" {
		return progress{}, fmt.Errorf("%w: progress response has no message", errMalformed)
	}
	p := progress{Message: sanitize(strings.ToUpper(strings.TrimSpace(msg)), 64)}
	var ok bool
	if p.Total, ok = counter(resp.NumTotal); !ok {
		return progress{}, fmt.Errorf("%w: progress num_total is not a number", errMalformed)
	}
	if p.Completed, ok = counter(resp.NumCompleted); !ok {
		return progress{}, fmt.Errorf("%w: progress num_completed is not a number", errMalformed)
	}
	return p, nil
}

// counter reads an optional non-negative count given as a number or a
// numeric string; absent or null is 0.
func counter(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, true
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(strings.TrimSpace(s))
		if len(raw) == 0 {
			return 0, true
		}
	}
	n, ok := integer(raw)
	return max(n, 0), ok
}

// integer parses a JSON number that has an integral value (4522, 4522.0,
// 4.522e3).
func integer(raw []byte) (int64, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// sanitize makes vendor text safe to show: printable runes only, at most
// max bytes.
func sanitize(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) > max {
		s = s[:max]
		s = strings.ToValidUTF8(s, "")
	}
	return s
}

// jsonErr describes a JSON decoding error without quoting the input.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("unexpected %s", te.Value)
	}
	return "invalid JSON"
}
