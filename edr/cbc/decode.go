package cbc

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// errMalformed marks a vendor answer the driver cannot understand. It is
// permanent: asking again returns the same bytes.
var errMalformed = vendorhttp.ErrMalformed

// jobIDRe bounds what a job ID may look like: it is interpolated into URL
// paths. The document shows a number (4522); strings of the same alphabet
// are accepted in case the service ever sends one.
var jobIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ref is the checkpointed operation reference. The org key, base URL and
// credentials come from the driver's Config, so a worker configured for the
// same tenant can re-attach with this alone.
type ref struct {
	ID string `json:"id"`
}

// decodeStart reads the job ID from the start response
// {"id":4522,"type":"event_export","status":"CREATED",...}. The ID may be a
// JSON number or string; unknown fields are ignored.
func decodeStart(body []byte) (string, error) {
	var resp struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return "", fmt.Errorf("%w: start response is not a JSON object: %s", errMalformed, jsonErr(err))
	}
	id, err := jobID(resp.ID)
	if err != nil {
		return "", fmt.Errorf("%w: start response: %w", errMalformed, err)
	}
	return id, nil
}

// parseRef reads a checkpointed reference, tolerating a numeric id.
func parseRef(raw []byte) (string, error) {
	var r struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", errors.New("operation reference is not a JSON object")
	}
	return jobID(r.ID)
}

// jobID accepts a JSON number (an integer) or a string of jobIDRe.
func jobID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("job id missing")
	}
	var id string
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", errors.New("job id is not a valid string")
		}
		id = strings.TrimSpace(id)
	default:
		n, ok := integer(raw)
		if !ok {
			return "", errors.New("job id is neither an integer nor a string")
		}
		id = strconv.FormatInt(n, 10)
	}
	if !jobIDRe.MatchString(id) {
		return "", errors.New("job id has unexpected characters")
	}
	return id, nil
}

// progress is the decoded Get Job Progress answer.
type progress struct {
	Total, Completed int64
	// Message is upper-cased, trimmed and sanitised; "" when the answer has
	// none (the SDK reads it as optional, and its fixture for a completed
	// job has only the counters).
	Message string
}

// decodeProgress reads {"num_total":100000,"num_completed":100000,
// "message":"FINISHED"}. Every field is optional (counters may be numbers or
// numeric strings; absent or null is 0), but an object with none of them
// is not a progress answer.
func decodeProgress(body []byte) (progress, error) {
	var resp struct {
		NumTotal     json.RawMessage `json:"num_total"`
		NumCompleted json.RawMessage `json:"num_completed"`
		Message      json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return progress{}, fmt.Errorf("%w: progress response is not a JSON object: %s", errMalformed, jsonErr(err))
	}
	if resp.NumTotal == nil && resp.NumCompleted == nil && resp.Message == nil {
		return progress{}, fmt.Errorf("%w: progress response has neither counters nor a message", errMalformed)
	}
	return progressOf(resp.NumTotal, resp.NumCompleted, resp.Message)
}

func progressOf(total, completed, message json.RawMessage) (progress, error) {
	var p progress
	if m := bytes.TrimSpace(message); len(m) > 0 && string(m) != "null" {
		var msg string
		if json.Unmarshal(m, &msg) != nil {
			return progress{}, fmt.Errorf("%w: progress message is not a string", errMalformed)
		}
		p.Message = sanitize(strings.ToUpper(strings.TrimSpace(msg)), 64)
	}
	var ok bool
	if p.Total, ok = counter(total); !ok {
		return progress{}, fmt.Errorf("%w: progress num_total is not a number", errMalformed)
	}
	if p.Completed, ok = counter(completed); !ok {
		return progress{}, fmt.Errorf("%w: progress num_completed is not a number", errMalformed)
	}
	return p, nil
}

// String is the progress line shown to analysts: "IN_PROGRESS 40/100",
// "40/100" without a message, "QUEUED" without counters.
func (p progress) String() string { return p.with(p.Message) }

// with is the progress line with another status word.
func (p progress) with(word string) string {
	if p.Total > 0 || p.Completed > 0 {
		return strings.TrimSpace(fmt.Sprintf("%s %d/%d", word, p.Completed, p.Total))
	}
	return word
}

// Job object statuses (the SDK's platform/models/job.yaml). Fixtures show
// others too (IN_PROGRESS, ""): anything but COMPLETED and FAILED means
// "not yet".
const (
	jobCompleted = "COMPLETED"
	jobFailed    = "FAILED"
)

// jobInfo is a decoded job object: the answer of GET /jobs/{id} and an
// element of the job list.
type jobInfo struct {
	ID     string
	Type   string // lower-cased; "" when absent
	Status string // upper-cased, sanitised; "" when absent
	// Errors is the job's "errors" (the SDK's model: a string), sanitised;
	// "" when absent.
	Errors string
	// Created is create_time; zero when absent or unparseable.
	Created time.Time
	// Progress is the embedded progress; nil when absent.
	Progress *progress
	// Params are the export parameters read from job_parameters; ok false
	// when the job does not carry them in a shape this driver knows.
	Params exportParams
}

// exportParams are what identifies an event export: its query, the start
// of its time range and its row limit.
type exportParams struct {
	ok          bool
	Query       string
	Start       time.Time
	Rows        int64 // -1 when absent
	APIResource string
}

// decodeJob reads one job object.
func decodeJob(body []byte) (jobInfo, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return jobInfo{}, fmt.Errorf("%w: job response is not JSON: %s", errMalformed, jsonErr(err))
	}
	j, err := jobOf(raw)
	if err != nil {
		return jobInfo{}, fmt.Errorf("%w: job response: %w", errMalformed, err)
	}
	return j, nil
}

// jobOf decodes a job object. Only the id is required.
func jobOf(raw json.RawMessage) (jobInfo, error) {
	var o struct {
		ID            json.RawMessage `json:"id"`
		Type          json.RawMessage `json:"type"`
		Status        json.RawMessage `json:"status"`
		Errors        json.RawMessage `json:"errors"`
		CreateTime    json.RawMessage `json:"create_time"`
		Progress      json.RawMessage `json:"progress"`
		JobParameters json.RawMessage `json:"job_parameters"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return jobInfo{}, fmt.Errorf("not a JSON object: %s", jsonErr(err))
	}
	id, err := jobID(o.ID)
	if err != nil {
		return jobInfo{}, err
	}
	j := jobInfo{
		ID:     id,
		Type:   strings.ToLower(sanitize(str(o.Type), 64)),
		Status: strings.ToUpper(strings.TrimSpace(sanitize(str(o.Status), 64))),
		Errors: text(o.Errors, 300),
	}
	if t, err := time.Parse(time.RFC3339Nano, str(o.CreateTime)); err == nil {
		j.Created = t
	}
	if bytes.HasPrefix(bytes.TrimSpace(o.Progress), []byte("{")) {
		var pr struct {
			NumTotal     json.RawMessage `json:"num_total"`
			NumCompleted json.RawMessage `json:"num_completed"`
			Message      json.RawMessage `json:"message"`
		}
		if json.Unmarshal(o.Progress, &pr) == nil {
			if p, err := progressOf(pr.NumTotal, pr.NumCompleted, pr.Message); err == nil {
				j.Progress = &p
			}
		}
	}
	j.Params = paramsOf(o.JobParameters)
	return j, nil
}

// paramsOf finds the export's query object in job_parameters. The shapes
// accepted, in order:
//
//	{"job_parameters":{"query":{"query":…,"time_range":…,"rows":…}},"api_resource":…}   the SDK's usbdevice_export fixture
//	{"job_parameters":{"query":"…","time_range":…,"rows":…}}                          the query object itself, one level down
//	{"query":{"query":…,"time_range":…,"rows":…},"api_resource":…}                     the start request as sent
//
// "job_parameters":{"job_parameters":null} (the SDK's livequery_export
// fixture) carries none: ok is false.
func paramsOf(raw json.RawMessage) exportParams {
	type level struct {
		JobParameters json.RawMessage `json:"job_parameters"`
		Query         json.RawMessage `json:"query"`
		TimeRange     json.RawMessage `json:"time_range"`
		Rows          json.RawMessage `json:"rows"`
		APIResource   json.RawMessage `json:"api_resource"`
	}
	var outer level
	if json.Unmarshal(raw, &outer) != nil {
		return exportParams{}
	}
	resource := str(outer.APIResource)
	candidates := []json.RawMessage{}
	var inner level
	if json.Unmarshal(outer.JobParameters, &inner) == nil {
		resource = cmp.Or(resource, str(inner.APIResource))
		candidates = append(candidates, inner.Query, outer.JobParameters)
	}
	candidates = append(candidates, outer.Query, raw)
	for _, c := range candidates {
		var q level
		if json.Unmarshal(c, &q) != nil || q.Query == nil {
			continue
		}
		var query string
		if json.Unmarshal(q.Query, &query) != nil {
			continue // an object: not the query object itself
		}
		p := exportParams{ok: true, Query: query, Rows: -1, APIResource: strings.ToLower(cmp.Or(str(q.APIResource), resource))}
		var tr struct {
			Start string `json:"start"`
		}
		if json.Unmarshal(q.TimeRange, &tr) == nil {
			if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(tr.Start)); err == nil {
				p.Start = t
			}
		}
		if n, ok := integer(bytes.TrimSpace(q.Rows)); ok {
			p.Rows = n
		}
		return p
	}
	return exportParams{}
}

// jobList is one decoded answer of the job list.
type jobList struct {
	// NumFound is how many jobs the service says there are; -1 when the
	// answer does not say (the whole list, as the SDK reads it).
	NumFound int64
	// Jobs are the elements that decode; Unreadable counts those that do
	// not (no usable id).
	Jobs       []jobInfo
	Unreadable int
	// Listed is how many elements the answer held.
	Listed int
}

// decodeJobList reads {"num_found":N,"results":[job objects]} (the SDK
// reads "results" and treats it as absent when missing) or a bare array.
func decodeJobList(body []byte) (jobList, error) {
	var elems []json.RawMessage
	out := jobList{NumFound: -1}
	trimmed := bytes.TrimSpace(body)
	if bytes.HasPrefix(trimmed, []byte("[")) {
		if err := json.Unmarshal(trimmed, &elems); err != nil {
			return jobList{}, fmt.Errorf("%w: job list is not JSON: %s", errMalformed, jsonErr(err))
		}
	} else {
		var o struct {
			NumFound json.RawMessage   `json:"num_found"`
			Results  []json.RawMessage `json:"results"`
		}
		if err := json.Unmarshal(trimmed, &o); err != nil {
			return jobList{}, fmt.Errorf("%w: job list is not a JSON object with results: %s", errMalformed, jsonErr(err))
		}
		if n, ok := counter(o.NumFound); ok && o.NumFound != nil && string(bytes.TrimSpace(o.NumFound)) != "null" {
			out.NumFound = n
		}
		elems = o.Results
	}
	out.Listed = len(elems)
	for _, e := range elems {
		j, err := jobOf(e)
		if err != nil {
			out.Unreadable++
			continue
		}
		out.Jobs = append(out.Jobs, j)
	}
	return out, nil
}

// vendorMessage reads the error a CBC answer carries: "errorMessage" (the
// SDK raises ServerError on it even with 200), or "message" with
// "error_code" or "reason" (400 query_malformed_syntax). Both are
// sanitised; "" when the body names no error.
func vendorMessage(body []byte) (code, msg string) {
	var e struct {
		ErrorMessage json.RawMessage `json:"errorMessage"`
		ErrorCode    json.RawMessage `json:"error_code"`
		Reason       json.RawMessage `json:"reason"`
		Message      json.RawMessage `json:"message"`
	}
	if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) || json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	code = sanitize(cmp.Or(str(e.ErrorCode), str(e.Reason)), 64)
	msg = cmp.Or(text(e.ErrorMessage, 200), text(e.Message, 200))
	return code, msg
}

// str returns a JSON string's value, or "" for anything else.
func str(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

// text renders a vendor's free text (a string, or any other JSON value
// compacted) safe to show, at most max bytes; "" for absent or null.
func text(raw json.RawMessage, max int) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` || string(raw) == "[]" || string(raw) == "{}" {
		return ""
	}
	if s := str(raw); s != "" || raw[0] == '"' {
		return sanitize(s, max)
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return ""
	}
	return sanitize(b.String(), max)
}

// counter reads an optional non-negative count given as a number or a
// numeric string; absent or null is 0.
func counter(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, true
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(strings.TrimSpace(s))
		if len(raw) == 0 {
			return 0, true
		}
	}
	n, ok := integer(raw)
	return max(n, 0), ok
}

// integer parses a JSON number that has an integral value (4522, 4522.0,
// 4.522e3).
func integer(raw []byte) (int64, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// sanitize makes vendor text safe to show: printable runes only, at most
// max bytes.
func sanitize(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) > max {
		s = s[:max]
		s = strings.ToValidUTF8(s, "")
	}
	return s
}

// jsonErr describes a JSON decoding error without quoting the input.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("unexpected %s", te.Value)
	}
	return "invalid JSON"
}
