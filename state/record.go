package state

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// The record's schema beyond the lease protocol's fields: the job's plan,
// one checkpoint per task, the decided outcome (FieldOutcome) and a
// delivery refusal. This file is its one codec: the runner writes and reads
// records through it, and fleetctl reads them the same way.
const (
	FieldPlan       = "plan"
	FieldTaskPrefix = "task:"
	FieldDelivery   = "delivery"
)

// PlannedTask is one task of a job's plan, stored with the job so a
// takeover runs the same plan.
type PlannedTask struct {
	Kind    string   `json:"kind"`
	Timeout Duration `json:"timeout,omitempty"`
}

// Duration is a time.Duration that reads "90s" / "4h" (or a number of
// seconds) in JSON and writes the string form.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration: want a string like \"4h\" or seconds, got %s", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// TaskCheckpoint is one task's progress, stored under "task:<kind>". A
// takeover resumes the task from it: it never creates the SampleDB task or
// starts the vendor operation a second time.
type TaskCheckpoint struct {
	Kind string `json:"kind"`
	// State is "" until the task ends, then a SampleDB task state.
	State string `json:"state,omitempty"`
	// TaskID is the SampleDB job task, once created.
	TaskID sampledb.ID `json:"taskId,omitempty"`
	// Intent is written before each vendor start; a later owner that finds
	// it without a Ref looks the operation up instead of starting it again.
	Intent *edr.Intent `json:"intent,omitempty"`
	// Attempts counts the intents written (vendor starts tried).
	Attempts int `json:"attempts,omitempty"`
	// Ref is the vendor operation reference, checkpointed as soon as the
	// vendor accepted the operation.
	Ref      json.RawMessage `json:"ref,omitempty"`
	Started  int64           `json:"started,omitempty"` // unix ms, vendor start
	Ended    int64           `json:"ended,omitempty"`
	Progress string          `json:"progress,omitempty"`
	Result   *edr.Result     `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Reported is set once SampleDB acknowledged the task's final state.
	Reported bool `json:"reported,omitempty"`
	// Cancel records what happened at the vendor on abort/timeout.
	Cancel string `json:"cancel,omitempty"`
	// Polls counts the vendor polls made by the owners so far, LastError
	// is the last failed call's error (retried), NextPoll when the next
	// call is due (unix ms): as of the last checkpoint, for operators.
	Polls     int    `json:"polls,omitempty"`
	LastError string `json:"lastError,omitempty"`
	NextPoll  int64  `json:"nextPoll,omitempty"`
}

// Done reports whether the task ended.
func (c *TaskCheckpoint) Done() bool { return c.State != "" }

// Field returns the record field and value that store c.
func (c *TaskCheckpoint) Field() (name, value string) {
	b, _ := json.Marshal(c)
	return FieldTaskPrefix + c.Kind, string(b)
}

// Outcome is a job's terminal decision, stored once (Store.Decide).
type Outcome struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by"`
	At     int64  `json:"at"` // unix ms
}

// Encode returns the value Decide stores.
func (o Outcome) Encode() []byte {
	b, _ := json.Marshal(o)
	return b
}

// DecodeOutcome reads a stored outcome; it fails on anything that is not a
// terminal decision.
func DecodeOutcome(b []byte) (Outcome, error) {
	var o Outcome
	if err := json.Unmarshal(b, &o); err != nil {
		return Outcome{}, fmt.Errorf("state: outcome: %w", err)
	}
	if !sampledb.IsTerminal(o.State) {
		return Outcome{}, fmt.Errorf("state: outcome: %q is not a terminal state", o.State)
	}
	return o, nil
}

// DeliveryRefusal records that SampleDB keeps refusing the decided terminal
// state (412) of a job it holds in a non-terminal state: operators see it
// while the owner keeps asking.
type DeliveryRefusal struct {
	Attempts int    `json:"attempts"`
	State    string `json:"sampledbState"` // what SampleDB holds
	Answer   string `json:"answer"`        // SampleDB's message
	At       int64  `json:"at"`            // unix ms of the last refusal
}

// Field returns the record field and value that store d.
func (d DeliveryRefusal) Field() (name, value string) {
	b, _ := json.Marshal(d)
	return FieldDelivery, string(b)
}

// PlanField returns the record field and value that store plan.
func PlanField(plan []PlannedTask) (name, value string) {
	if plan == nil {
		plan = []PlannedTask{}
	}
	b, _ := json.Marshal(plan)
	return FieldPlan, string(b)
}

// Plan returns the job's plan; ok is false when none is stored yet. An
// unreadable plan is an error (the caller plans again).
func (r *Record) Plan() (plan []PlannedTask, ok bool, err error) {
	return PlanOf(r.Fields)
}

// PlanOf is Plan over a record's fields.
func PlanOf(fields map[string]string) (plan []PlannedTask, ok bool, err error) {
	raw, ok := fields[FieldPlan]
	if !ok || raw == "" {
		return nil, false, nil
	}
	if err := json.Unmarshal([]byte(raw), &plan); err != nil {
		return nil, true, fmt.Errorf("state: plan: %w", err)
	}
	return plan, true, nil
}

// Task returns the checkpoint of the task of kind: a fresh one when none is
// stored, or when the stored one is unreadable (then with the error, so the
// caller can say the task restarts). A progress line newer than the
// checkpoint (Lines) gives its progress, poll count and next poll.
func (r *Record) Task(kind string) (*TaskCheckpoint, error) {
	cp, err := TaskOf(r.Fields, kind)
	if raw, ok := r.Lines[kind]; ok && err == nil {
		var l ProgressLine
		if json.Unmarshal([]byte(raw), &l) == nil && l.Polls > cp.Polls {
			cp.Progress, cp.Polls, cp.NextPoll = l.Progress, l.Polls, l.NextPoll
		}
	}
	return cp, err
}

// TaskOf is Task over a record's fields.
func TaskOf(fields map[string]string, kind string) (*TaskCheckpoint, error) {
	cp := &TaskCheckpoint{Kind: kind}
	raw := fields[FieldTaskPrefix+kind]
	if raw == "" {
		return cp, nil
	}
	if err := json.Unmarshal([]byte(raw), cp); err != nil {
		return &TaskCheckpoint{Kind: kind}, fmt.Errorf("state: task %s: %w", kind, err)
	}
	cp.Kind = kind
	return cp, nil
}

// TaskKinds returns the kinds with a stored checkpoint, sorted.
func (r *Record) TaskKinds() []string {
	var kinds []string
	for k := range r.Fields {
		if kind, ok := strings.CutPrefix(k, FieldTaskPrefix); ok {
			kinds = append(kinds, kind)
		}
	}
	sort.Strings(kinds)
	return kinds
}

// Decision returns the decided outcome, nil when none; an unreadable one is
// an error.
func (r *Record) Decision() (*Outcome, error) {
	raw := r.Outcome()
	if raw == nil {
		return nil, nil
	}
	o, err := DecodeOutcome(raw)
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// Refusal returns the delivery refusal on record, nil when none.
func (r *Record) Refusal() *DeliveryRefusal {
	raw := r.Fields[FieldDelivery]
	if raw == "" {
		return nil
	}
	var d DeliveryRefusal
	if json.Unmarshal([]byte(raw), &d) != nil {
		return nil
	}
	return &d
}
