package sampledb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The decoders below read untrusted bytes. They are tolerant where the
// source document is loose (IDs as number or string, unknown fields,
// null metaData/messages, timestamps as number, numeric string or RFC 3339)
// and strict where it is explicit: the body is a JSON object, a job has an
// id and a state, a task has an id.

// wireEnvelope is the Argus envelope as it arrives.
type wireEnvelope struct {
	ResponseCode flexInt         `json:"responseCode"`
	Limit        flexInt         `json:"limit"`
	Offset       flexInt         `json:"offset"`
	Count        flexInt         `json:"count"`
	Size         flexInt         `json:"size"`
	MetaData     json.RawMessage `json:"metaData"`
	Messages     json.RawMessage `json:"messages"`
	Data         json.RawMessage `json:"data"`
}

// decodeEnvelope decodes an Argus envelope. Data is nil when the body has
// no "data" member and the JSON literal null when it is null.
func decodeEnvelope(b []byte) (Envelope, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return Envelope{}, errors.New("body is not a JSON object")
	}
	var w wireEnvelope
	if err := json.Unmarshal(t, &w); err != nil {
		return Envelope{}, fmt.Errorf("envelope: %w", err)
	}
	env := Envelope{
		ResponseCode: int(w.ResponseCode),
		Limit:        int(w.Limit),
		Offset:       int(w.Offset),
		Count:        int(w.Count),
		Size:         int(w.Size),
		Messages:     decodeMessages(w.Messages),
		Data:         w.Data,
	}
	if isObject(w.MetaData) {
		// Best effort: metaData is informative only.
		_ = json.Unmarshal(w.MetaData, &env.MetaData)
	}
	return env, nil
}

// decodeMessages reads the envelope's messages best effort: they only
// explain an error, so a shape we do not expect never hides the status.
func decodeMessages(raw json.RawMessage) []Message {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil
	}
	var out []Message
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			if s != "" {
				out = append(out, Message{Message: s})
			}
			continue
		}
		var m struct {
			Message json.RawMessage `json:"message"`
			Type    json.RawMessage `json:"type"`
			Field   json.RawMessage `json:"field"`
		}
		if json.Unmarshal(it, &m) != nil {
			continue
		}
		msg := Message{Message: rawText(m.Message), Type: rawText(m.Type), Field: rawText(m.Field)}
		if msg != (Message{}) {
			out = append(out, msg)
		}
	}
	return out
}

// rawText renders a JSON value as text: strings unquoted, null empty,
// anything else verbatim. The client caps it after scrubbing the key.
func rawText(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(t, &s) == nil {
		return s
	}
	return string(t)
}

// wireJob is a job object as it arrives.
type wireJob struct {
	ID                ID              `json:"id"`
	State             string          `json:"state"`
	AbortRequested    bool            `json:"abortRequested"`
	Submission        json.RawMessage `json:"submission"`
	Classification    json.RawMessage `json:"classification"`
	EnqueuedTimestamp flexInt         `json:"enqueuedTimestamp"`
	StartTimestamp    flexInt         `json:"startTimestamp"`
	EndTimestamp      flexInt         `json:"endTimestamp"`
}

// decodeJob decodes a job object (an envelope's data).
func decodeJob(raw json.RawMessage) (Job, error) {
	if !isObject(raw) {
		return Job{}, errors.New("job: data is not a JSON object")
	}
	var w wireJob
	if err := json.Unmarshal(raw, &w); err != nil {
		return Job{}, fmt.Errorf("job: %w", err)
	}
	if w.ID == "" {
		return Job{}, errors.New("job: no id")
	}
	if w.State == "" {
		return Job{}, fmt.Errorf("job %s: no state", w.ID)
	}
	j := Job{
		ID:                string(w.ID),
		State:             w.State,
		AbortRequested:    w.AbortRequested,
		EnqueuedTimestamp: int64(w.EnqueuedTimestamp),
		StartTimestamp:    int64(w.StartTimestamp),
		EndTimestamp:      int64(w.EndTimestamp),
	}
	// The submission and classification are copied from the Kafka message
	// by SampleDB; read them best effort so that one odd field does not
	// make the whole job unreadable (json skips fields of the wrong type).
	if err := lenient(w.Submission, &j.Submission); err != nil {
		return Job{}, fmt.Errorf("job %s: submission: %w", w.ID, err)
	}
	if err := lenient(w.Classification, &j.Classification); err != nil {
		return Job{}, fmt.Errorf("job %s: classification: %w", w.ID, err)
	}
	return j, nil
}

// decodeJobs decodes a page of jobs; null is an empty page.
func decodeJobs(raw json.RawMessage) ([]Job, error) {
	items, err := decodeArray(raw)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	out := make([]Job, 0, len(items))
	for i, it := range items {
		j, err := decodeJob(it)
		if err != nil {
			return nil, fmt.Errorf("jobs[%d]: %w", i, err)
		}
		out = append(out, j)
	}
	return out, nil
}

// wireTask is a task object as it arrives.
type wireTask struct {
	ID             ID      `json:"id"`
	Worker         string  `json:"worker"`
	State          string  `json:"state"`
	StartTimestamp flexInt `json:"startTimestamp"`
	EndTimestamp   flexInt `json:"endTimestamp"`
}

// decodeTask decodes a task object.
func decodeTask(raw json.RawMessage) (Task, error) {
	if !isObject(raw) {
		return Task{}, errors.New("task: data is not a JSON object")
	}
	var w wireTask
	if err := json.Unmarshal(raw, &w); err != nil {
		return Task{}, fmt.Errorf("task: %w", err)
	}
	if w.ID == "" {
		return Task{}, errors.New("task: no id")
	}
	return Task{
		ID:             w.ID,
		Worker:         w.Worker,
		State:          w.State,
		StartTimestamp: int64(w.StartTimestamp),
		EndTimestamp:   int64(w.EndTimestamp),
	}, nil
}

// decodeTasks decodes a list of tasks; null is empty.
func decodeTasks(raw json.RawMessage) ([]Task, error) {
	items, err := decodeArray(raw)
	if err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	out := make([]Task, 0, len(items))
	for i, it := range items {
		t, err := decodeTask(it)
		if err != nil {
			return nil, fmt.Errorf("tasks[%d]: %w", i, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func decodeArray(raw json.RawMessage) ([]json.RawMessage, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return nil, errors.New("no data")
	}
	if string(t) == "null" {
		return nil, nil
	}
	if t[0] != '[' {
		return nil, errors.New("data is not a JSON array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(t, &items); err != nil {
		return nil, err
	}
	return items, nil
}

// lenient unmarshals raw into v, ignoring fields of the wrong type. Absent
// or null leaves v zero.
func lenient(raw json.RawMessage, v any) error {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil
	}
	if t[0] != '{' {
		return errors.New("not a JSON object")
	}
	err := json.Unmarshal(t, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return nil
	}
	return err
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// flexInt is an integer that may arrive as a JSON number (integral or
// not), a numeric string, an RFC 3339 time (read as epoch milliseconds),
// or null (zero).
type flexInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexInt) UnmarshalJSON(b []byte) error {
	t := bytes.TrimSpace(b)
	if string(t) == "null" {
		*f = 0
		return nil
	}
	s := string(t)
	if len(t) > 0 && t[0] == '"' {
		if err := json.Unmarshal(t, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			*f = 0
			return nil
		}
		if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
			*f = flexInt(ts.UnixMilli())
			return nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x >= math.MaxInt64 || x <= math.MinInt64 {
		return fmt.Errorf("want an integer, got %.40q", s)
	}
	*f = flexInt(x)
	return nil
}
