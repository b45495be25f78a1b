package cblr

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
)

// refVersion is bumped when the Ref layout changes incompatibly.
const refVersion = 1

// step is where one sensor's triage stands. See doc.go for the diagram.
type step string

const (
	// stepOpen: the sensor needs a session: reuse one of its pending or
	// active sessions, or open one (after a session was lost, or for a
	// sensor Find found no session of).
	stepOpen step = "open"
	// stepWait: the session is open; waiting for the sensor to check in.
	stepWait step = "wait"
	// stepProcessList: "process list" was accepted; following it.
	stepProcessList step = "process_list"
	// stepGetFile: "get file" was accepted; following it, then fetching the
	// file from the session store.
	stepGetFile step = "get_file"
	// stepClose: finished (or failed); the session still has to be closed.
	stepClose step = "close"
	// stepDone: nothing left to do for this sensor.
	stepDone step = "done"
)

// opRef is the operation reference: the whole state of one triage, so that
// any worker can resume it from any step. It holds no secret and no file
// content.
type opRef struct {
	V      int    `json:"v"`
	SHA256 string `json:"sha256"`
	// Path is the submitted on-host path when checkPath accepted it; "get
	// file" runs only then.
	Path     string `json:"path,omitempty"`
	FileName string `json:"fileName,omitempty"`
	// At is the start intent's instant (unix ms): only sessions and
	// commands created from At less edr.FindSkew on are taken as this
	// triage's. 0 in references written before it existed.
	At int64 `json:"at,omitempty"`
	// Tag is the check_in_timeout (seconds) the sessions opened under the
	// intent asked for: checkInTag of the intent's key. 0 = untagged.
	Tag     float64      `json:"tag,omitempty"`
	Sensors []*sensorRef `json:"sensors"`
	// Notes are task-level remarks for the analyst (a path that was not
	// used).
	Notes []string `json:"notes,omitempty"`
}

// sensorRef is one sensor's progress.
type sensorRef struct {
	SensorID  int64  `json:"sensorId"`
	SessionID flexID `json:"sessionId,omitempty"`
	Step      step   `json:"step"`
	Host      string `json:"host,omitempty"`
	// Borrowed says the session was already open when this triage took it
	// (an analyst's, another task's): the driver uses it, as cbapi does,
	// but leaves closing it to whoever opened it.
	Borrowed bool `json:"borrowed,omitempty"`
	// Listed says "process list" completed (its matches are recorded):
	// after a lost session only "get file" is left to do.
	Listed bool `json:"listed,omitempty"`
	// Reopens counts the sessions acquired again after one was lost; Lost
	// lists the sessions given up, never taken again.
	Reopens int      `json:"reopens,omitempty"`
	Lost    []flexID `json:"lost,omitempty"`
	// WaitTimeout is the session's sensor_wait_timeout in seconds (0 =
	// not reported yet; defaultWaitTimeout applies).
	WaitTimeout float64 `json:"waitTimeout,omitempty"`
	// SessionTimeout is the session's session_timeout in seconds (0 = not
	// reported).
	SessionTimeout float64 `json:"sessionTimeout,omitempty"`
	// LastActivity is when this driver last gave the session something to
	// do (creation, command, keepalive): the keepalive clock.
	LastActivity time.Time `json:"lastActivity"`
	// CommandID is the command being followed (process list, get file).
	CommandID flexID `json:"commandId,omitempty"`
	// FileID is "get file"'s file_id when the POST answer carried it.
	FileID flexID `json:"fileId,omitempty"`
	// Uploaded is the file's size_uploaded when it last changed, at
	// UploadSince; UploadStalls counts the polls since without progress.
	Uploaded     int64     `json:"uploaded,omitempty"`
	UploadSince  time.Time `json:"uploadSince,omitzero"`
	UploadStalls int       `json:"uploadStalls,omitempty"`
	// Matches counts matching processes; Matched lists the first few.
	Matches int            `json:"matches,omitempty"`
	Matched []matchedProc  `json:"matched,omitempty"`
	File    *retrievedFile `json:"file,omitempty"`
	// Failure, when set, is why this sensor failed (shown to analysts).
	Failure string `json:"failure,omitempty"`
	// Status is the HTTP status behind Failure, when there was one.
	Status int `json:"status,omitempty"`
	// Remarks are notes for the analyst that are not failures.
	Remarks []string `json:"remarks,omitempty"`
	// Checked says the server knows the sensor (GET …/sensor/{id}): it is
	// the customer's. Skipped says it was not used (unknown to the
	// customer's server, or unable to run Live Response): a remark says
	// why, and it is not a failure.
	Checked bool `json:"checked,omitempty"`
	Skipped bool `json:"skipped,omitempty"`
}

type matchedProc struct {
	PID  int64  `json:"pid"`
	Path string `json:"path"`
	Why  string `json:"why"`
}

type retrievedFile struct {
	Path string `json:"path"`
	// Size is the file's size; for a file over the limit, its size when
	// the file store reported one, else 0.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	// TooLarge says the file exceeded Limit (MaxFile) and was not hashed.
	TooLarge bool  `json:"tooLarge,omitempty"`
	Limit    int64 `json:"limit,omitempty"`
}

func decodeRef(raw edr.Ref) (*opRef, error) {
	var r opRef
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "ref", Msg: "unreadable operation reference", Err: err}
	}
	if r.V != refVersion || len(r.Sensors) == 0 {
		return nil, edr.Permanent(vendor, "ref", fmt.Sprintf("unsupported operation reference (version %d, %d sensors)", r.V, len(r.Sensors)))
	}
	for _, s := range r.Sensors {
		if s == nil || (s.Step != stepDone && s.Step != stepOpen && s.SessionID == "") {
			return nil, edr.Permanent(vendor, "ref", "operation reference names a sensor without a session")
		}
	}
	return &r, nil
}

func (r *opRef) encode() edr.Ref {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("cblr: marshal ref: %v", err)) // plain structs: cannot fail
	}
	return b
}

// name is how a sensor is named in messages: "sensor 10 (WIN-01)".
func (s *sensorRef) name() string {
	if s.Host != "" {
		return fmt.Sprintf("sensor %d (%s)", s.SensorID, s.Host)
	}
	return fmt.Sprintf("sensor %d", s.SensorID)
}

// fail records why the sensor failed; its session is closed next (when
// this triage opened it: see finish).
func (s *sensorRef) fail(status int, format string, args ...any) {
	s.Failure = fmt.Sprintf(format, args...)
	s.Status = status
	s.CommandID = ""
	if s.SessionID == "" {
		s.Step = stepDone
		return
	}
	s.Step = stepClose
}

func (r *opRef) done() bool {
	for _, s := range r.Sensors {
		if s.Step != stepDone {
			return false
		}
	}
	return true
}

// failure returns the task-level error when every sensor failed, else nil.
func (r *opRef) failure(op string) error {
	var parts []string
	status := 0
	for _, s := range r.Sensors {
		if s.Failure == "" {
			return nil
		}
		parts = append(parts, s.name()+": "+s.Failure)
		status = s.Status
	}
	msg := parts[0]
	if len(parts) > 1 {
		msg = "Live Response failed on every sensor: " + strings.Join(parts, "; ")
		status = 0
	}
	return &edr.Error{Vendor: vendor, Op: op, Status: status, Msg: msg}
}

func (r *opRef) progress() string {
	finished := 0
	var parts []string
	for _, s := range r.Sensors {
		switch s.Step {
		case stepDone:
			finished++
		case stepOpen:
			parts = append(parts, fmt.Sprintf("%d opening a session", s.SensorID))
		case stepWait:
			parts = append(parts, fmt.Sprintf("%d waiting for check-in", s.SensorID))
		case stepProcessList:
			parts = append(parts, fmt.Sprintf("%d process list", s.SensorID))
		case stepGetFile:
			parts = append(parts, fmt.Sprintf("%d get file", s.SensorID))
		case stepClose:
			parts = append(parts, fmt.Sprintf("%d closing", s.SensorID))
		}
	}
	p := fmt.Sprintf("%d/%d sensors finished", finished, len(r.Sensors))
	if len(parts) > 0 {
		p += "; " + strings.Join(parts, ", ")
	}
	return p
}
