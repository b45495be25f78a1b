package sampledb

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/analysisfleet/analysisfleet/job"
)

// The decoders below read untrusted bytes. They are tolerant where the
// source document is loose or silent (IDs as number or string, unknown
// fields, null metaData/messages, timestamps as number, numeric string or
// RFC 3339, states in any case, the task object's shape) and strict where
// it is explicit: the body is a JSON object, a job has an id and a state.

// wireEnvelope is the Argus envelope as it arrives.
type wireEnvelope struct {
	ResponseCode flexInt         `json:"responseCode"`
	Limit        flexInt         `json:"limit"`
	Offset       flexInt         `json:"offset"`
	Count        flexInt         `json:"count"`
	Size         flexInt         `json:"size"`
	MetaData     json.RawMessage `json:"metaData"`
	Messages     json.RawMessage `json:"messages"`
	Data         json.RawMessage `json:"data"`
}

// decodeEnvelope decodes an Argus envelope. Data is nil when the body has
// no "data" member and the JSON literal null when it is null.
func decodeEnvelope(b []byte) (Envelope, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return Envelope{}, errors.New("body is not a JSON object")
	}
	var w wireEnvelope
	if err := json.Unmarshal(t, &w); err != nil {
		return Envelope{}, fmt.Errorf("envelope: %w", err)
	}
	env := w.envelope()
	env.Data = w.Data
	return env, nil
}

// envelope is w without its data.
func (w *wireEnvelope) envelope() Envelope {
	env := Envelope{
		ResponseCode: int(w.ResponseCode),
		Limit:        int(w.Limit),
		Offset:       int(w.Offset),
		Count:        int(w.Count),
		Size:         int(w.Size),
		Messages:     decodeMessages(w.Messages),
	}
	if isObject(w.MetaData) {
		// Best effort: metaData is informative only.
		_ = json.Unmarshal(w.MetaData, &env.MetaData)
	}
	return env
}

// briefEnvelope is an envelope whose data is a page of jobs of which only
// the brief part is read (its Data shadows wireEnvelope's).
type briefEnvelope struct {
	wireEnvelope
	Data []*wireBrief `json:"data"`
}

// decodeBriefEnvelope decodes an envelope and its page of brief jobs in
// one pass over the body, where decodeEnvelope then decodeJobs take four
// (at 100,000 active jobs the abort listing reads about 100 MB an
// interval). It uses the encoding/json/v2 engine (go-json-experiment) with
// v1's semantics, which skips what a brief job does not read about three
// times as fast as encoding/json (BenchmarkDecodeBriefPage); the fuzz test
// holds it to what decodeEnvelope and decodeJobs read. Not ok when the
// body is not an envelope whose data is an array of objects of the
// expected field types: decodeEnvelope and decodeJobs then read it, item
// by item. An ordinary page is read by decodeBriefEnvelopeFast, anything
// else by decodeBriefEnvelopeRef.
func decodeBriefEnvelope(b []byte) (Envelope, bool) {
	if env, ok := decodeBriefEnvelopeFast(b); ok {
		return env, true
	}
	return decodeBriefEnvelopeRef(b)
}

// decodeBriefEnvelopeRef is decodeBriefEnvelope by the jsonv2 engine: the
// reference that decodeBriefEnvelopeFast is held to, and what reads the
// pages that the fast way does not.
func decodeBriefEnvelopeRef(b []byte) (Envelope, bool) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return Envelope{}, false
	}
	var w briefEnvelope
	if jsonv2.Unmarshal(t, &w, jsonv1.DefaultOptionsV1()) != nil || w.Data == nil {
		return Envelope{}, false // missing or null data too: decodeJobs says which
	}
	env := w.wireEnvelope.envelope()
	pg := briefPage(w.Data, nil)
	env.brief, env.sum = &pg, pageSum(t)
	return env, true
}

// pageSum is a hash of a page's answer, to tell a page repeated.
func pageSum(b []byte) uint64 { return maphash.Bytes(pageSeed, b) }

var pageSeed = maphash.MakeSeed()

// decodeMessages reads the envelope's messages best effort: they only
// explain an error, so a shape we do not expect never hides the status.
func decodeMessages(raw json.RawMessage) []Message {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil
	}
	var out []Message
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			if s != "" {
				out = append(out, Message{Message: s})
			}
			continue
		}
		var m struct {
			Message json.RawMessage `json:"message"`
			Type    json.RawMessage `json:"type"`
			Field   json.RawMessage `json:"field"`
		}
		if json.Unmarshal(it, &m) != nil {
			continue
		}
		msg := Message{Message: rawText(m.Message), Type: rawText(m.Type), Field: rawText(m.Field)}
		if msg != (Message{}) {
			out = append(out, msg)
		}
	}
	return out
}

// rawText renders a JSON value as text: strings unquoted, null empty,
// anything else verbatim. The client caps it after scrubbing the key.
func rawText(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(t, &s) == nil {
		return s
	}
	return string(t)
}

// wireBrief is the part of a job object a brief listing reads.
type wireBrief struct {
	ID                ID      `json:"id"`
	State             string  `json:"state"`
	AbortRequested    bool    `json:"abortRequested"`
	EnqueuedTimestamp flexInt `json:"enqueuedTimestamp"`
	StartTimestamp    flexInt `json:"startTimestamp"`
	EndTimestamp      flexInt `json:"endTimestamp"`
}

// job checks what every job must have (an ID and a state) and returns it
// without submission and classification.
func (w *wireBrief) job() (Job, error) {
	if w.ID == "" {
		return Job{}, errors.New("job: no id")
	}
	state := normState(w.State)
	if state == "" {
		return Job{}, fmt.Errorf("job %s: no state", w.ID)
	}
	return Job{
		ID:                job.CanonicalID(string(w.ID)),
		State:             state,
		AbortRequested:    w.AbortRequested,
		EnqueuedTimestamp: int64(w.EnqueuedTimestamp),
		StartTimestamp:    int64(w.StartTimestamp),
		EndTimestamp:      int64(w.EndTimestamp),
	}, nil
}

// wireJob is a job object as it arrives.
type wireJob struct {
	wireBrief
	Submission     json.RawMessage `json:"submission"`
	Classification json.RawMessage `json:"classification"`
}

// decodeJob decodes a job object (an envelope's data).
func decodeJob(raw json.RawMessage) (Job, error) {
	w, err := object[wireJob]("job", raw)
	if err != nil {
		return Job{}, err
	}
	j, err := w.job()
	if err != nil {
		return Job{}, err
	}
	// The submission and classification are copied from the Kafka message
	// by SampleDB; read them best effort so that one odd field does not
	// make the whole job unreadable (json skips fields of the wrong type).
	if err := lenient(w.Submission, &j.Submission); err != nil {
		return Job{}, fmt.Errorf("job %s: submission: %w", w.ID, err)
	}
	if err := lenient(w.Classification, &j.Classification); err != nil {
		return Job{}, fmt.Errorf("job %s: classification: %w", w.ID, err)
	}
	return j, nil
}

// decodeBrief decodes a job object's brief part (ListOptions.Brief).
func decodeBrief(raw json.RawMessage) (Job, error) {
	w, err := object[wireBrief]("job", raw)
	if err != nil {
		return Job{}, err
	}
	return w.job()
}

// object decodes raw, which must be a JSON object, into a T; what names
// it in errors.
func object[T any](what string, raw json.RawMessage) (*T, error) {
	if !isObject(raw) {
		return nil, fmt.Errorf("%s: data is not a JSON object", what)
	}
	w := new(T)
	if err := json.Unmarshal(raw, w); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return w, nil
}

// jobPage is one decoded page of a job listing.
type jobPage struct {
	jobs   []Job
	items  int   // items in the page, good and bad: what the offset moves by
	bad    int   // items left out because they are not jobs we can read
	first  error // why the first bad item was left out
	pooled bool  // jobs is from briefJobsPool (release puts it back)
}

// release puts a pooled page's jobs back, cleared, for the next page; the
// page must not be used after.
func (pg *jobPage) release() {
	if !pg.pooled || cap(pg.jobs) > maxBriefScratch {
		return
	}
	clear(pg.jobs)
	jobs := pg.jobs[:0]
	pg.jobs, pg.pooled = nil, false
	briefJobsPool.Put(&jobs)
}

// briefJobsPool holds the jobs of brief pages between pages (a listing of
// 100,000 active jobs is 100 pages every abort poll interval).
var briefJobsPool = sync.Pool{New: func() any { return new([]Job) }}

// decodeJobs decodes a page of jobs; null is an empty page. An item that
// is not a readable job is left out and counted, so one odd job does not
// hide the others; data that is not a list at all is an error. brief reads
// each job's brief part only (ListOptions.Brief), in one pass over the
// page when every item is an object of the expected types.
func decodeJobs(raw json.RawMessage, brief bool) (jobPage, error) {
	if brief {
		if pg, ok := decodeBriefs(raw); ok {
			return pg, nil
		}
	}
	items, err := decodeArray(raw)
	if err != nil {
		return jobPage{}, fmt.Errorf("jobs: %w", err)
	}
	one := decodeJob
	if brief {
		one = decodeBrief
	}
	pg := jobPage{jobs: make([]Job, 0, len(items)), items: len(items)}
	for i, it := range items {
		j, err := one(it)
		if err != nil {
			pg.add(i, err)
			continue
		}
		pg.jobs = append(pg.jobs, j)
	}
	return pg, nil
}

// decodeBriefs is decodeJobs' fast way for a brief page: the whole array
// at once. Not ok when any item is not an object of the expected field
// types (decodeJobs then reads the items one by one).
func decodeBriefs(raw json.RawMessage) (jobPage, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '[' {
		return jobPage{}, false
	}
	var ws []*wireBrief
	if json.Unmarshal(t, &ws) != nil {
		return jobPage{}, false
	}
	return briefPage(ws, nil), true
}

// briefPage is the page of the brief items ws (a nil one is not an object),
// its jobs in dst's memory when it has room.
func briefPage(ws []*wireBrief, dst []Job) jobPage {
	if cap(dst) < len(ws) {
		dst = make([]Job, 0, len(ws))
	}
	pg := jobPage{jobs: dst[:0], items: len(ws)}
	for i, w := range ws {
		if w == nil {
			pg.add(i, errors.New("job: data is not a JSON object"))
			continue
		}
		j, err := w.job()
		if err != nil {
			pg.add(i, err)
			continue
		}
		pg.jobs = append(pg.jobs, j)
	}
	return pg
}

// add counts item i as left out.
func (pg *jobPage) add(i int, err error) {
	if pg.bad == 0 {
		pg.first = fmt.Errorf("jobs[%d]: %w", i, err)
	}
	pg.bad++
}

// wireTask is a task object as it arrives. Its ID is read separately
// (taskIDIn): the document does not show the task object.
type wireTask struct {
	Worker         string  `json:"worker"`
	State          string  `json:"state"`
	StartTimestamp flexInt `json:"startTimestamp"`
	EndTimestamp   flexInt `json:"endTimestamp"`
}

// decodeTask decodes a task object. Its ID is taken from "taskId" or
// "taskID" (any case), else from "id"; a string or a number.
func decodeTask(raw json.RawMessage) (Task, error) {
	w, err := object[wireTask]("task", raw)
	if err != nil {
		return Task{}, err
	}
	id, err := taskIDIn(raw, "")
	if err != nil {
		return Task{}, fmt.Errorf("task: %w", err)
	}
	if id == "" {
		return Task{}, errors.New("task: no id (id, taskId or taskID)")
	}
	return Task{
		ID:             id,
		Worker:         w.Worker,
		State:          normState(w.State),
		StartTimestamp: int64(w.StartTimestamp),
		EndTimestamp:   int64(w.EndTimestamp),
	}, nil
}

// taskIDIn reads a task ID from the object raw: "taskId"/"taskID" (any
// case) first, then "id". An ID equal to jobID (case-insensitive) is the
// job's own and is not taken. It returns "" when there is none.
func taskIDIn(raw json.RawMessage, jobID string) (ID, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", err
	}
	pick := func(names ...string) json.RawMessage {
		for _, n := range names {
			if v, ok := fields[n]; ok {
				return v
			}
		}
		for k, v := range fields {
			if strings.EqualFold(k, names[0]) {
				return v
			}
		}
		return nil
	}
	for _, v := range []json.RawMessage{pick("taskId", "taskID"), pick("id")} {
		if v == nil || isNull(v) {
			continue
		}
		var id ID
		if err := json.Unmarshal(v, &id); err != nil {
			return "", err
		}
		id = ID(strings.TrimSpace(string(id)))
		if id != "" && !(jobID != "" && strings.EqualFold(string(id), jobID)) {
			return id, nil
		}
	}
	return "", nil
}

// createdTask finds, in the data of the answer to POST /job/{id}/task, the
// task that was created. The document does not show that answer, so the
// task may be the data itself (ID under id, taskId or taskID, string or
// number), or the data may be the job, with the task under "task" or in
// "tasks" (the newest one of worker). The job's own ID is never taken for
// the task's. ok is false when no task ID can be found.
func createdTask(raw json.RawMessage, jobID, worker string) (Task, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return Task{}, false
	}
	switch t[0] {
	case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		// A bare ID.
		var id ID
		if json.Unmarshal(t, &id) != nil {
			return Task{}, false
		}
		id = ID(strings.TrimSpace(string(id)))
		if id == "" || strings.EqualFold(string(id), jobID) {
			return Task{}, false
		}
		return Task{ID: id, Worker: worker, State: TaskExecuting}, true
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(t, &items) != nil {
			return Task{}, false
		}
		// The newest task of worker; an executing one before a finished one.
		var fallback *Task
		for i := len(items) - 1; i >= 0; i-- {
			tk, ok := createdTask(items[i], jobID, worker)
			if !ok || (tk.Worker != "" && tk.Worker != worker) {
				continue
			}
			if tk.State == TaskExecuting {
				return tk, true
			}
			if fallback == nil {
				fallback = &tk
			}
		}
		if fallback != nil {
			return *fallback, true
		}
		return Task{}, false
	case '{':
		id, err := taskIDIn(t, jobID)
		if err != nil {
			return Task{}, false
		}
		if id != "" {
			var w wireTask
			_ = lenient(t, &w)
			return Task{
				ID:             id,
				Worker:         cmp.Or(w.Worker, worker),
				State:          cmp.Or(normState(w.State), TaskExecuting),
				StartTimestamp: int64(w.StartTimestamp),
				EndTimestamp:   int64(w.EndTimestamp),
			}, true
		}
		// No ID of its own, or the job's: the job with the task inside?
		var inner struct {
			Task  json.RawMessage `json:"task"`
			Tasks json.RawMessage `json:"tasks"`
		}
		if json.Unmarshal(t, &inner) != nil {
			return Task{}, false
		}
		if isObject(inner.Task) {
			if tk, ok := createdTask(inner.Task, jobID, worker); ok {
				return tk, true
			}
		}
		if len(bytes.TrimSpace(inner.Tasks)) > 0 && bytes.TrimSpace(inner.Tasks)[0] == '[' {
			return createdTask(inner.Tasks, jobID, worker)
		}
	}
	return Task{}, false
}

// otherJobIn returns the job that the data of a task call's answer names
// when that is not jobID: the jobId (jobID, job_id, any case) of a task
// object or of any item of a list, or the id of a job object that holds
// tasks ("task" or "tasks") and the job IDs of those tasks. ok is false
// when the data names jobID or no job at all.
func otherJobIn(raw json.RawMessage, jobID string) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "", false
	}
	switch t[0] {
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(t, &items) != nil {
			return "", false
		}
		for _, it := range items {
			if other, ok := otherJobIn(it, jobID); ok {
				return other, true
			}
		}
	case '{':
		var fields map[string]json.RawMessage
		if json.Unmarshal(t, &fields) != nil {
			return "", false
		}
		var inner []json.RawMessage
		for k, v := range fields {
			switch strings.ToLower(k) {
			case "jobid", "job_id":
				if id, ok := idText(v); ok && !job.SameID(id, jobID) {
					return id, true
				}
			case "task", "tasks":
				inner = append(inner, v)
			}
		}
		if len(inner) == 0 {
			return "", false
		}
		// A job holding its tasks: its id is the job's.
		for k, v := range fields {
			if strings.EqualFold(k, "id") {
				if id, ok := idText(v); ok && !job.SameID(id, jobID) {
					return id, true
				}
			}
		}
		for _, v := range inner {
			if other, ok := otherJobIn(v, jobID); ok {
				return other, true
			}
		}
	}
	return "", false
}

// idText reads a JSON string or number as an ID's text; ok is false for
// anything else (null included).
func idText(raw json.RawMessage) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || (t[0] != '"' && t[0] != '-' && (t[0] < '0' || t[0] > '9')) {
		return "", false
	}
	var id ID
	if json.Unmarshal(t, &id) != nil {
		return "", false
	}
	s := strings.TrimSpace(string(id))
	return s, s != ""
}

// decodeTasks decodes a list of tasks; null is empty. Items that are not
// readable tasks are left out.
func decodeTasks(raw json.RawMessage) ([]Task, error) {
	items, err := decodeArray(raw)
	if err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	out := make([]Task, 0, len(items))
	for _, it := range items {
		if t, err := decodeTask(it); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// normState is a job or task state as the fleet compares it: SampleDB's
// text trimmed and lower-cased ("ABORTED" is aborted).
func normState(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func decodeArray(raw json.RawMessage) ([]json.RawMessage, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return nil, errors.New("no data")
	}
	if string(t) == "null" {
		return nil, nil
	}
	if t[0] != '[' {
		return nil, errors.New("data is not a JSON array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(t, &items); err != nil {
		return nil, err
	}
	return items, nil
}

// lenient unmarshals raw into v, ignoring fields of the wrong type. Absent
// or null leaves v zero.
func lenient(raw json.RawMessage, v any) error {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil
	}
	if t[0] != '{' {
		return errors.New("not a JSON object")
	}
	err := json.Unmarshal(t, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return nil
	}
	return err
}

func isObject(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

// flexInt is an integer that may arrive as a JSON number (integral or
// not), a numeric string, an RFC 3339 time (read as epoch milliseconds),
// or null (zero).
type flexInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexInt) UnmarshalJSON(b []byte) error {
	t := bytes.TrimSpace(b)
	if string(t) == "null" {
		*f = 0
		return nil
	}
	s := string(t)
	if len(t) > 0 && t[0] == '"' {
		if err := json.Unmarshal(t, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			*f = 0
			return nil
		}
		if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
			*f = flexInt(ts.UnixMilli())
			return nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x >= math.MaxInt64 || x <= math.MinInt64 {
		return fmt.Errorf("want an integer, got %.40q", s)
	}
	*f = flexInt(x)
	return nil
}
