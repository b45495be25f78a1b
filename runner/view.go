package runner

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// JobView is a read-only reading of a job's ledger record, for operators
// (fleetctl): what the runner planned, each task's checkpoint, and the
// decided outcome.
type JobView struct {
	ID       string              `json:"id"`
	Owner    string              `json:"owner"`
	Token    int64               `json:"token"`
	Source   string              `json:"source"`
	Created  time.Time           `json:"created"`
	SHA256   string              `json:"sha256,omitempty"`
	Platform string              `json:"platform,omitempty"`
	Plan     []state.PlannedTask `json:"plan,omitempty"`
	Tasks    []TaskView          `json:"tasks,omitempty"`
	Outcome  *OutcomeView        `json:"outcome,omitempty"`
	// Refused is set while SampleDB keeps refusing the decided terminal
	// state (412) of a job it holds in a non-terminal state.
	Refused *RefusedView    `json:"refused,omitempty"`
	Message json.RawMessage `json:"message,omitempty"`
}

// RefusedView says SampleDB keeps refusing a job's terminal state.
type RefusedView struct {
	Attempts      int       `json:"attempts"`
	SampleDBState string    `json:"sampledbState"`
	Answer        string    `json:"answer"`
	Last          time.Time `json:"last"`
}

// TaskView is one task's checkpoint.
type TaskView struct {
	Kind     string          `json:"kind"`
	State    string          `json:"state,omitempty"`
	TaskID   sampledb.ID     `json:"taskId,omitempty"`
	Ref      json.RawMessage `json:"ref,omitempty"`
	Started  time.Time       `json:"started,omitempty"`
	Progress string          `json:"progress,omitempty"`
	Error    string          `json:"error,omitempty"`
	Cancel   string          `json:"cancel,omitempty"`
	Reported bool            `json:"reported,omitempty"`
}

// OutcomeView is the decided terminal state.
type OutcomeView struct {
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// View reads a ledger record. Unreadable parts are left empty rather than
// failing: an operator wants to see what is there.
func View(r *state.Record) JobView {
	v := JobView{ID: r.ID, Owner: r.Owner, Token: r.Token, Source: r.Source, Created: r.Created}
	if json.Valid(r.Msg) {
		v.Message = json.RawMessage(r.Msg)
		if msg, err := job.Parse(r.Msg); err == nil {
			v.SHA256 = strings.ToLower(msg.Submission.Sample.ID)
			v.Platform = msg.Classification.Platform
		}
	}
	v.Plan, _, _ = r.Plan()
	for _, k := range r.TaskKinds() {
		cp, err := r.Task(k)
		if err != nil {
			v.Tasks = append(v.Tasks, TaskView{Kind: k, Error: "unreadable checkpoint"})
			continue
		}
		tv := TaskView{Kind: k, State: cp.State, TaskID: cp.TaskID, Ref: cp.Ref, Progress: cp.Progress,
			Error: cp.Error, Cancel: cp.Cancel, Reported: cp.Reported}
		if cp.Started > 0 {
			tv.Started = time.UnixMilli(cp.Started)
		}
		v.Tasks = append(v.Tasks, tv)
	}
	if d := r.Refusal(); d != nil {
		v.Refused = &RefusedView{Attempts: d.Attempts, SampleDBState: d.State, Answer: d.Answer, Last: time.UnixMilli(d.At)}
	}
	if o, err := r.Decision(); err == nil && o != nil {
		v.Outcome = &OutcomeView{State: o.State, Reason: o.Reason, By: o.By, At: time.UnixMilli(o.At)}
	}
	return v
}

// Vendors returns the vendors of the job's tasks (for filtering).
func (v JobView) Vendors() []string {
	var out []string
	for _, t := range v.Tasks {
		out = append(out, edr.Vendor(t.Kind))
	}
	return out
}
