package sampledb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
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

// JobMessage is the job-creation message SampleDB posts to
// Sample.Analysis.Job.{OSL,SVG}.
//
// Decoding is strict only where the fleet reads a field: jobID, the
// submission's customer, sample.id, name and metaData, and the
// classification's sample, type and platform must have their documented
// types. Every other field is informative: a value of another type than the
// document shows (an object where it shows null, a number where it shows a
// string) leaves the Go field zero and never fails the message.
type JobMessage struct {
	JobID          string         `json:"jobID"`
	Submission     Submission     `json:"submission"`
	Classification Classification `json:"classification"`
}

// Submission is the submission a job was created from. The fleet reads
// Customer, Sample, Name and MetaData (CB EDR sensors, the on-host path);
// the rest is carried along.
type Submission struct {
	ID               string          `json:"id"`
	Customer         string          `json:"customer"`
	Sample           Sample          `json:"sample"`
	CreatedByUser    *User           `json:"createdByUser,omitempty"`
	CreatedTimestamp int64           `json:"createdTimestamp"`
	Name             string          `json:"name"`
	Timestamp        int64           `json:"timestamp"`
	MimeType         string          `json:"mimeType"`
	MetaData         map[string]any  `json:"metaData,omitempty"`
	TLP              string          `json:"tlp"`
	ACL              json.RawMessage `json:"acl,omitempty"`
	UserAgent        *UserAgent      `json:"userAgent,omitempty"`
}

// UnmarshalJSON decodes a submission: the fields the fleet reads strictly
// (a wrong type is a *json.UnmarshalTypeError, after every other field was
// decoded), the others leniently. Numbers in metaData are json.Number, so
// sensor IDs keep every digit whatever decoder the caller uses.
func (s *Submission) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	if !isObject(b) {
		return typeError(b, reflect.TypeFor[Submission]())
	}
	var used struct {
		Customer string         `json:"customer"`
		Sample   Sample         `json:"sample"`
		Name     string         `json:"name"`
		MetaData map[string]any `json:"metaData"`
	}
	strict := decodeNumbers(b, &used)
	type plain Submission // without this method
	var p plain
	if err := looseObject(b, &p); err != nil {
		return err
	}
	*s = Submission(p)
	s.Customer, s.Sample, s.Name, s.MetaData = used.Customer, used.Sample, used.Name, used.MetaData
	return strict
}

// Sample identifies the submitted sample; ID is its SHA-256.
type Sample struct {
	ID string `json:"id"`
}

// User is the submitting user. The fleet never reads it: any field may
// arrive in another shape (the document shows customer and domain as null;
// producers may send objects, kept verbatim in Customer and Domain).
type User struct {
	ID        int64           `json:"id"`
	ShortName string          `json:"shortName"`
	Name      string          `json:"name"`
	Customer  json.RawMessage `json:"customer"`
	Domain    json.RawMessage `json:"domain"`
}

// UnmarshalJSON decodes a user leniently: it never fails.
func (u *User) UnmarshalJSON(b []byte) error {
	type plain User
	var p plain
	if looseObject(b, &p) == nil {
		*u = User(p)
	}
	return nil
}

// UserAgent is the submitting client. The fleet never reads it.
type UserAgent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// UnmarshalJSON decodes a user agent leniently: it never fails.
func (a *UserAgent) UnmarshalJSON(b []byte) error {
	type plain UserAgent
	var p plain
	if looseObject(b, &p) == nil {
		*a = UserAgent(p)
	}
	return nil
}

// Classification is the sample classification; the playbook plans tasks
// from Platform and Type, and the consumer checks Sample against the
// submission's hash. The rest is carried along.
type Classification struct {
	Sample           string          `json:"sample"`
	ClassificationID string          `json:"classificationID"`
	CreatedTimestamp int64           `json:"createdTimestamp"`
	Version          string          `json:"version"`
	Type             string          `json:"type"`
	SuperType        string          `json:"superType"`
	Arch             string          `json:"arch"`
	Platform         string          `json:"platform"`
	Meta             json.RawMessage `json:"meta,omitempty"`
}

// UnmarshalJSON decodes a classification: sample, type and platform
// strictly, the others leniently (see Submission.UnmarshalJSON).
func (c *Classification) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	if !isObject(b) {
		return typeError(b, reflect.TypeFor[Classification]())
	}
	var used struct {
		Sample   string `json:"sample"`
		Type     string `json:"type"`
		Platform string `json:"platform"`
	}
	strict := json.Unmarshal(b, &used)
	type plain Classification
	var p plain
	if err := looseObject(b, &p); err != nil {
		return err
	}
	*c = Classification(p)
	c.Sample, c.Type, c.Platform = used.Sample, used.Type, used.Platform
	return strict
}

// Job is the SampleDB job object (the envelope's data).
type Job struct {
	ID                string         `json:"id"`
	State             string         `json:"state"`
	AbortRequested    bool           `json:"abortRequested"`
	Submission        Submission     `json:"submission"`
	Classification    Classification `json:"classification"`
	EnqueuedTimestamp int64          `json:"enqueuedTimestamp"`
	StartTimestamp    int64          `json:"startTimestamp"`
	EndTimestamp      int64          `json:"endTimestamp"`
}

// Message rebuilds the Kafka job message a job was created from (used by the
// reconciler to re-adopt jobs after Redis lost its data).
func (j *Job) Message() JobMessage {
	return JobMessage{JobID: j.ID, Submission: j.Submission, Classification: j.Classification}
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
}

// Message is an Argus envelope message.
type Message struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Field   string `json:"field,omitempty"`
}
