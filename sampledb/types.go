package sampledb

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/analysisfleet/analysisfleet/job"
)

// Job states. SampleDB sets enqueued; the fleet moves a job to executing and
// then to exactly one terminal state.
const (
	StateEnqueued  = "enqueued"
	StateExecuting = "executing"
	StateSuccess   = "success"
	StateFailed    = "failed"
	StateAborted   = "aborted"
	StateTimeout   = "timeout"
)

// Task states (SampleDB job tasks).
const (
	TaskExecuting = "executing"
	TaskSuccess   = "success"
	TaskFailed    = "failed"
	TaskTimeout   = "timeout"
	TaskCancelled = "cancelled"
)

// IsTerminal reports whether a job state is final. States are lower-case:
// the client's decoders lower-case what SampleDB sends.
func IsTerminal(state string) bool {
	switch state {
	case StateSuccess, StateFailed, StateAborted, StateTimeout:
		return true
	}
	return false
}

// IsTaskTerminal reports whether a task state is final.
func IsTaskTerminal(state string) bool {
	switch state {
	case TaskSuccess, TaskFailed, TaskTimeout, TaskCancelled:
		return true
	}
	return false
}

// Job is the SampleDB job object (the envelope's data).
type Job struct {
	ID                string             `json:"id"`
	State             string             `json:"state"`
	AbortRequested    bool               `json:"abortRequested"`
	Submission        job.Submission     `json:"submission"`
	Classification    job.Classification `json:"classification"`
	EnqueuedTimestamp int64              `json:"enqueuedTimestamp"`
	StartTimestamp    int64              `json:"startTimestamp"`
	EndTimestamp      int64              `json:"endTimestamp"`
}

// Message rebuilds the Kafka job message a job was created from (used by the
// reconciler to re-adopt jobs after Redis lost its data).
func (j *Job) Message() job.Message {
	return job.Message{JobID: j.ID, Submission: j.Submission, Classification: j.Classification}
}

// Task is a SampleDB job task.
type Task struct {
	ID             ID     `json:"id"`
	Worker         string `json:"worker"`
	State          string `json:"state"`
	StartTimestamp int64  `json:"startTimestamp,omitempty"`
	EndTimestamp   int64  `json:"endTimestamp,omitempty"`
}

// ID is an identifier that SampleDB may serialise as a JSON number or a
// string; it is kept as the number's literal text or the string.
type ID string

// UnmarshalJSON accepts a JSON string or number.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*id = ID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("id: want string or number, got %.40s", b)
	}
	*id = ID(n.String())
	return nil
}

// MarshalJSON writes the ID bare when its text is a JSON number literal
// (an ID that arrived as a number, 17, round-trips as a number) and as a
// string otherwise: "0042", "+7" or "t-9" are not JSON numbers. The ID
// keeps no note of how it arrived, so a string ID that reads as a number
// ("17") is written as the number 17; UnmarshalJSON reads it back the same.
func (id ID) MarshalJSON() ([]byte, error) {
	if isJSONNumber(string(id)) {
		return []byte(id), nil
	}
	return json.Marshal(string(id))
}

// isJSONNumber reports whether s is exactly a JSON number literal:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// Envelope is the Argus response envelope.
type Envelope struct {
	ResponseCode int             `json:"responseCode"`
	Limit        int             `json:"limit"`
	Offset       int             `json:"offset"`
	Count        int             `json:"count"`
	Size         int             `json:"size"`
	MetaData     map[string]any  `json:"metaData"`
	Messages     []Message       `json:"messages"`
	Data         json.RawMessage `json:"data"`

	// brief is the page of brief jobs a brief listing decoded along with
	// the envelope, in one pass (Data is then nil); sum is a hash of the
	// answer it came in, for the listing's repeated-page check (the answer
	// itself is not kept: its buffer is reused, httpc.DoBorrowed).
	brief *jobPage
	sum   uint64
}

// Message is an Argus envelope message.
type Message struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Field   string `json:"field,omitempty"`
}
