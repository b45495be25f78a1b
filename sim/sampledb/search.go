package sampledb

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	sdb "github.com/analysisfleet/analysisfleet/sampledb"
)

// Listing defaults and bounds, from the source document.
const (
	defaultLimit = 25
	maxLimit     = 10000
)

// criteria is a parsed list query or search body.
type criteria struct {
	states     []string // empty = the active jobs
	samples    []string // lower-case sha256
	customers  []string
	start, end *int64 // epoch ms; nil = unbounded
	fields     []string
	matchAll   bool
	sort       []sortKey
	limit      int
	offset     int
}

type sortKey struct {
	field string
	desc  bool
}

// fieldError is a request field SampleDB refuses (400).
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

var timeFields = []string{"enqueuedTimestamp", "startTimestamp", "endTimestamp"}

// listJobs serves GET /sampledb/v2/job: the criteria come from the query.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, err := newCriteria(raw{
		states: splitList(q["state"]), samples: splitList(q["sampleSha256"]),
		customers: splitList(q["customer"]), fields: splitList(q["timeFieldStrategy"]),
		sortBy: splitList(q["sortBy"]), match: q.Get("timeMatchStrategy"),
		start: queryTime(q, "startTimestamp", s.now()), end: queryTime(q, "endTimestamp", s.now()),
		limit: q.Get("limit"), offset: q.Get("offset"),
	})
	if err != nil {
		s.refuse(w, err)
		return
	}
	s.servePage(w, c)
}

// searchBody is the body of POST /sampledb/v2/job/search.
type searchBody struct {
	State             stringList      `json:"state"`
	SampleSha256      stringList      `json:"sampleSha256"`
	Customer          stringList      `json:"customer"`
	StartTimestamp    json.RawMessage `json:"startTimestamp"`
	EndTimestamp      json.RawMessage `json:"endTimestamp"`
	TimeFieldStrategy stringList      `json:"timeFieldStrategy"`
	TimeMatchStrategy string          `json:"timeMatchStrategy"`
	SortBy            stringList      `json:"sortBy"`
	Limit             json.RawMessage `json:"limit"`
	Offset            json.RawMessage `json:"offset"`
}

// searchJobs serves POST /sampledb/v2/job/search. limit and offset may
// come from the body or the query; the body wins.
func (s *Server) searchJobs(w http.ResponseWriter, r *http.Request) {
	var b searchBody
	if !readBody(w, r, &b) {
		return
	}
	q := r.URL.Query()
	rw := raw{
		states: b.State, samples: b.SampleSha256, customers: b.Customer,
		fields: b.TimeFieldStrategy, sortBy: b.SortBy, match: b.TimeMatchStrategy,
		start: jsonTime(b.StartTimestamp, s.now()), end: jsonTime(b.EndTimestamp, s.now()),
		limit: q.Get("limit"), offset: q.Get("offset"),
	}
	if v := jsonScalar(b.Limit); v != "" {
		rw.limit = v
	}
	if v := jsonScalar(b.Offset); v != "" {
		rw.offset = v
	}
	if rw.start == nil {
		rw.start = queryTime(q, "startTimestamp", s.now())
	}
	if rw.end == nil {
		rw.end = queryTime(q, "endTimestamp", s.now())
	}
	c, err := newCriteria(rw)
	if err != nil {
		s.refuse(w, err)
		return
	}
	s.servePage(w, c)
}

func (s *Server) refuse(w http.ResponseWriter, err error) {
	var fe *fieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, fe.field, "%s", fe.msg)
		return
	}
	writeError(w, http.StatusBadRequest, "", "%v", err)
}

// servePage answers one page of the jobs c selects. In the common case —
// the jobs in creation order are already in c's order (the default sort,
// enqueuedTimestamp) — it takes one pass over the jobs that counts the
// hits and copies the page, without collecting the hits: a page of 1,000
// of 100,000 jobs costs a pass, not a 100,000-entry slice and a sort check
// (BenchmarkListPageOf100kJobs).
func (s *Server) servePage(w http.ResponseWriter, c criteria) {
	s.mu.Lock()
	page := make([]sdb.Job, 0, min(c.limit, 1024))
	count, sorted := 0, true
	var prev *simJob
	for _, j := range s.sortedLocked() {
		if !c.match(j) {
			continue
		}
		if prev != nil && c.compare(prev, j) > 0 {
			sorted = false
			break
		}
		if count >= c.offset && len(page) < c.limit {
			page = append(page, j.Job)
		}
		prev = j
		count++
	}
	if !sorted {
		var hits []*simJob
		for _, j := range s.sortedLocked() {
			if c.match(j) {
				hits = append(hits, j)
			}
		}
		slices.SortStableFunc(hits, c.compare)
		page = page[:0]
		for i := c.offset; i < len(hits) && len(page) < c.limit; i++ {
			page = append(page, hits[i].Job)
		}
		count = len(hits)
	}
	s.mu.Unlock()
	writePage(w, c.limit, c.offset, count, page, len(page))
}

// raw is a list query or search body before validation. start and end are
// nil when absent or not understood.
type raw struct {
	states, samples, customers, fields, sortBy []string
	match                                      string
	start, end                                 *int64
	limit, offset                              string
}

func newCriteria(r raw) (criteria, error) {
	c := criteria{limit: defaultLimit, start: r.start, end: r.end}
	for _, st := range r.states {
		if !knownJobState(st) {
			return c, &fieldError{"state", fmt.Sprintf("unknown job state %q", st)}
		}
		c.states = append(c.states, st)
	}
	for _, h := range r.samples {
		c.samples = append(c.samples, strings.ToLower(h))
	}
	c.customers = r.customers
	for _, f := range r.fields {
		switch {
		case strings.EqualFold(f, "all"):
			c.fields = append(c.fields, timeFields...)
		case slices.Contains(timeFields, f):
			c.fields = append(c.fields, f)
		default:
			return c, &fieldError{"timeFieldStrategy", fmt.Sprintf("unknown time field %q", f)}
		}
	}
	if len(c.fields) == 0 {
		// Silent in the document; Argus searches default to all fields.
		c.fields = timeFields
	}
	switch strings.ToLower(r.match) {
	case "", "any":
	case "all":
		c.matchAll = true
	default:
		return c, &fieldError{"timeMatchStrategy", fmt.Sprintf("want any or all, got %q", r.match)}
	}
	for _, f := range r.sortBy {
		k := sortKey{field: f}
		if rest, ok := strings.CutPrefix(f, "-"); ok {
			k = sortKey{field: rest, desc: true}
		}
		switch k.field {
		case "enqueuedTimestamp", "startTimestamp", "endTimestamp", "state", "id":
		default:
			return c, &fieldError{"sortBy", fmt.Sprintf("can't sort by %q", f)}
		}
		c.sort = append(c.sort, k)
	}
	if len(c.sort) == 0 {
		c.sort = []sortKey{{field: "enqueuedTimestamp"}}
	}
	var err error
	if r.limit != "" {
		if c.limit, err = strconv.Atoi(r.limit); err != nil || c.limit < 0 || c.limit > maxLimit {
			return c, &fieldError{"limit", fmt.Sprintf("must be an integer from 0 to %d, got %q", maxLimit, r.limit)}
		}
	}
	if r.offset != "" {
		if c.offset, err = strconv.Atoi(r.offset); err != nil || c.offset < 0 {
			return c, &fieldError{"offset", fmt.Sprintf("must be a non-negative integer, got %q", r.offset)}
		}
	}
	return c, nil
}

func (c *criteria) match(j *simJob) bool {
	if len(c.states) == 0 {
		if sdb.IsTerminal(j.State) {
			return false
		}
	} else if !slices.Contains(c.states, j.State) {
		return false
	}
	if len(c.samples) > 0 && !slices.Contains(c.samples, strings.ToLower(j.Submission.Sample.ID)) {
		return false
	}
	if len(c.customers) > 0 && !slices.Contains(c.customers, j.Submission.Customer) {
		return false
	}
	if c.start == nil && c.end == nil {
		return true
	}
	hits := 0
	for _, f := range c.fields {
		if c.inRange(timeField(j, f)) {
			hits++
		}
	}
	if c.matchAll {
		return hits == len(c.fields)
	}
	return hits > 0
}

// inRange: an unset timestamp (0) is in no range.
func (c *criteria) inRange(ms int64) bool {
	return ms != 0 && (c.start == nil || ms >= *c.start) && (c.end == nil || ms <= *c.end)
}

func timeField(j *simJob, f string) int64 {
	switch f {
	case "enqueuedTimestamp":
		return j.EnqueuedTimestamp
	case "startTimestamp":
		return j.StartTimestamp
	case "endTimestamp":
		return j.EndTimestamp
	}
	return 0
}

func (c *criteria) compare(a, b *simJob) int {
	for _, k := range c.sort {
		var d int
		switch k.field {
		case "state":
			d = cmp.Compare(a.State, b.State)
		case "id":
			d = cmp.Compare(a.ID, b.ID)
		default:
			d = cmp.Compare(timeField(a, k.field), timeField(b, k.field))
		}
		if k.desc {
			d = -d
		}
		if d != 0 {
			return d
		}
	}
	return cmp.Compare(a.seq, b.seq)
}

// splitList reads a repeatable, comma-separated query parameter.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// stringList is a JSON array of strings, a single (comma-separated)
// string, or null.
type stringList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = splitList([]string{s})
		return nil
	}
	var xs []string
	if err := json.Unmarshal(b, &xs); err != nil {
		return errors.New("want a string or a list of strings")
	}
	*l = splitList(xs)
	return nil
}

func jsonScalar(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return t
}

func queryTime(q url.Values, name string, now time.Time) *int64 {
	if !q.Has(name) {
		return nil
	}
	return parseTime(q.Get(name), now)
}

// jsonTime reads a search timestamp: epoch milliseconds as a JSON number,
// or a string parseTime understands. Anything else is ignored.
func jsonTime(raw json.RawMessage, now time.Time) *int64 {
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return parseTime(s, now)
	}
	return parseTime(t, now)
}

var relUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
	"month": 30 * 24 * time.Hour, "months": 30 * 24 * time.Hour,
	"y": 365 * 24 * time.Hour, "year": 365 * 24 * time.Hour, "years": 365 * 24 * time.Hour,
}

var relTime = regexp.MustCompile(`^now\s*(?:([+-])\s*(\d+)\s*([a-z]+))?$`)

// parseTime reads epoch milliseconds, RFC 3339, or the document's relative
// form ("now", "now - 1 week"). The document does not define the relative
// grammar; forms we don't understand are ignored (no bound) rather than
// refused.
func parseTime(s string, now time.Time) *int64 {
	s = strings.ToLower(strings.TrimSpace(s))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return &n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > -1e15 && f < 1e15 {
		n := int64(f)
		return &n
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s)); err == nil {
		n := t.UnixMilli()
		return &n
	}
	m := relTime.FindStringSubmatch(s)
	if m == nil {
		return nil
	}
	if m[1] == "" {
		n := now.UnixMilli()
		return &n
	}
	count, err := strconv.ParseInt(m[2], 10, 32)
	if err != nil {
		return nil
	}
	unit, ok := relUnits[m[3]]
	if !ok {
		return nil
	}
	d := time.Duration(count) * unit
	if m[1] == "-" {
		d = -d
	}
	n := now.Add(d).UnixMilli()
	return &n
}
