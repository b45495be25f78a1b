package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

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
