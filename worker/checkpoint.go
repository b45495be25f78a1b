package worker

import (
	"encoding/json"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// Ledger fields the runner owns (besides the protocol's in package state).
const (
	fieldPlan       = "plan"
	fieldTaskPrefix = "task:"
	fieldDelivery   = "delivery"
)

// deliveryRefusal records that SampleDB keeps refusing the decided terminal
// state (412) of a job it holds in a non-terminal state: operators see it in
// fleetctl while the runner keeps asking.
type deliveryRefusal struct {
	Attempts int    `json:"attempts"`
	State    string `json:"sampledbState"` // what SampleDB holds
	Answer   string `json:"answer"`        // SampleDB's message
	At       int64  `json:"at"`            // unix ms of the last refusal
}

// taskCheckpoint is one task's progress, stored in the ledger under
// "task:<kind>". A takeover resumes the task from it: it never creates the
// SampleDB task or starts the vendor operation a second time.
type taskCheckpoint struct {
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
}

func (c *taskCheckpoint) done() bool { return c.State != "" }

// outcome is a job's terminal decision, stored once (state.Store.Decide).
type outcome struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by"`
	At     int64  `json:"at"` // unix ms
}

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
