package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

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
	// Truncated says lists were cut to keep the summary under
	// MaxSummaryBytes (counts are kept).
	Truncated bool `json:"truncated,omitempty"`
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

// Summary caps: every field is bounded, so a summary always fits a Kafka
// record (a vendor's 64 KB error text or a thousand notes cannot make one
// unpublishable).
const (
	// MaxSummaryBytes bounds an encoded summary; lists are dropped (their
	// counts kept) until it fits.
	MaxSummaryBytes = 256 << 10
	maxSummaryText  = 2048
	maxSummaryNotes = 20
	maxSummaryItem  = 512
)

// ErrNotPublishable is wrapped by a Publisher's error when asking again
// cannot help (the record is refused as too large or invalid).
var ErrNotPublishable = errors.New("summary cannot be published")

// capSummary bounds s's texts and lists and encodes it. It reports whether
// lists had to be dropped to fit MaxSummaryBytes.
func capSummary(s *Summary) ([]byte, bool) {
	s.Reason = clip(s.Reason, maxSummaryText)
	for i := range s.Tasks {
		t := &s.Tasks[i]
		t.Error, t.Cancel = clip(t.Error, maxSummaryText), clip(t.Cancel, maxSummaryText)
		if t.Result == nil {
			continue
		}
		r := *t.Result // the checkpoint's copy stays whole
		if len(r.Notes) > maxSummaryNotes {
			r.Notes = append(r.Notes[:maxSummaryNotes:maxSummaryNotes], fmt.Sprintf("… %d more notes", len(r.Notes)-maxSummaryNotes))
		} else {
			r.Notes = append([]string(nil), r.Notes...)
		}
		for i, n := range r.Notes {
			r.Notes[i] = clip(n, maxSummaryItem)
		}
		r.Hosts = append([]string(nil), r.Hosts...)
		for i, h := range r.Hosts {
			r.Hosts[i] = clip(h, maxSummaryItem)
		}
		r.Files = append([]edr.File(nil), r.Files...)
		for i := range r.Files {
			r.Files[i].Host, r.Files[i].Path = clip(r.Files[i].Host, maxSummaryItem), clip(r.Files[i].Path, maxSummaryItem)
		}
		t.Result = &r
	}
	b, _ := json.Marshal(s)
	if len(b) <= MaxSummaryBytes {
		return b, false
	}
	s.Truncated = true
	for i := range s.Tasks {
		if r := s.Tasks[i].Result; r != nil {
			r.Hosts, r.Files, r.Notes = nil, nil, nil
		}
	}
	b, _ = json.Marshal(s)
	return b, true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
