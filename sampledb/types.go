package sampledb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
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

// IsTerminal reports whether a job state is final.
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
type JobMessage struct {
	JobID          string         `json:"jobID"`
	Submission     Submission     `json:"submission"`
	Classification Classification `json:"classification"`
}

// Submission is the submission a job was created from.
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

// Sample identifies the submitted sample; ID is its SHA-256.
type Sample struct {
	ID string `json:"id"`
}

// User is the submitting user.
type User struct {
	ID        int64   `json:"id"`
	ShortName string  `json:"shortName"`
	Name      string  `json:"name"`
	Customer  *string `json:"customer"`
	Domain    *string `json:"domain"`
}

// UserAgent is the submitting client.
type UserAgent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Classification is the sample classification; the playbook plans tasks
// from Platform and Type.
type Classification struct {
	Sample           string         `json:"sample"`
	ClassificationID string         `json:"classificationID"`
	CreatedTimestamp int64          `json:"createdTimestamp"`
	Version          string         `json:"version"`
	Type             string         `json:"type"`
	SuperType        string         `json:"superType"`
	Arch             string         `json:"arch"`
	Platform         string         `json:"platform"`
	Meta             map[string]any `json:"meta,omitempty"`
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
// string; it is kept as its decimal or string form.
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
		return fmt.Errorf("id: want string or number, got %s", b)
	}
	*id = ID(n.String())
	return nil
}

// MarshalJSON writes a number when the ID is numeric, else a string.
func (id ID) MarshalJSON() ([]byte, error) {
	if _, err := strconv.ParseInt(string(id), 10, 64); err == nil {
		return []byte(id), nil
	}
	return json.Marshal(string(id))
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
