package console

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/state"
)

// pageData is what every page template receives.
type pageData struct {
	Title   string
	Nav     string
	Who     string
	Write   bool
	Auth    bool   // a token login exists (show "Log out")
	LiveURL string // the page's live-update stream; "" for static pages
	Notice  string
	Errors  []string
	Data    any
}

// view is one page: its template and its data.
type view struct {
	tmpl, title, nav string
	live             bool
	data             func(r *http.Request) (any, []string, int, error)
}

func (s *Server) views() map[string]view {
	return map[string]view{
		"/{$}":           {tmpl: "overview", title: "Overview", nav: "overview", live: true, data: s.overviewData},
		"/jobs":          {tmpl: "jobs", title: "Jobs", nav: "jobs", live: true, data: s.jobsData},
		"/jobs/finished": {tmpl: "finished", title: "Finished jobs", nav: "finished", live: true, data: s.finishedData},
		"/jobs/{id}":     {tmpl: "job", title: "Job", nav: "jobs", live: true, data: s.jobData},
		"/leases":        {tmpl: "leases", title: "Leases and workers", nav: "leases", live: true, data: s.snapData},
		"/vendors":       {tmpl: "vendors", title: "Vendors", nav: "vendors", live: true, data: s.snapData},
		"/dlq":           {tmpl: "dlq", title: "Dead letters", nav: "dlq", live: true, data: s.snapData},
	}
}

type fragmentKey struct{}

// page serves a view: the whole page, or (inside a live stream) only its
// live part.
func (s *Server) page(v view) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, errs, code, err := v.data(r)
		if err != nil {
			s.log.Warn("console page", zap.String("path", r.URL.Path), zap.Error(err))
			s.fail(w, r, http.StatusServiceUnavailable, "cannot read the ledger: "+s.scrub(err.Error()))
			return
		}
		if r.Context().Value(fragmentKey{}) != nil {
			s.exec(w, v.tmpl, "live", s.pageData(r, v.title, v.nav, errs, d))
			return
		}
		p := s.pageData(r, v.title, v.nav, errs, d)
		if v.live {
			p.LiveURL = "/live?u=" + url.QueryEscape(r.URL.RequestURI())
		}
		if id := r.PathValue("id"); id != "" {
			p.Title = "Job " + id
		}
		p.Notice = notices[r.URL.Query().Get("done")]
		if r.URL.Query().Get("done") == "replay" {
			p.Notice = replayNotice(r.URL.Query())
		}
		s.write(w, code, v.tmpl, p)
	}
}

// notices are the messages an action's redirect may ask for (a fixed set:
// nothing from the URL is echoed).
var notices = map[string]string{
	"release":  "Released: the lease is expired now; the next worker with a free slot takes the job over and resumes it. See the audit log on the overview.",
	"abort":    "Abort requested: the holder is told at once and cancels the job at its vendors. See the audit log on the overview.",
	"noop":     "Nothing to do: the job was already in that state.",
	"finished": "The job is finished: there is nothing left to act on.",
}

func (s *Server) pageData(r *http.Request, title, nav string, errs []string, d any) pageData {
	return pageData{Title: title, Nav: nav, Who: who(r), Write: s.cfg.Write, Auth: s.token != nil, Errors: errs, Data: d}
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, tmpl, title, nav string, d any) {
	s.write(w, code, tmpl, s.pageData(r, title, nav, nil, d))
}

// write renders a whole page into a buffer first, so a template error is a
// 500 and not half a page.
func (s *Server) write(w http.ResponseWriter, code int, tmpl string, p pageData) {
	var b bytes.Buffer
	if err := s.pages[tmpl].ExecuteTemplate(&b, "layout", p); err != nil {
		s.log.Error("console template", zap.String("template", tmpl), zap.Error(err))
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

func (s *Server) exec(w http.ResponseWriter, tmpl, name string, p pageData) {
	if err := s.pages[tmpl].ExecuteTemplate(w, name, p); err != nil {
		s.log.Error("console template", zap.String("template", tmpl), zap.Error(err))
	}
}

// fail renders an error page.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.write(w, code, "error", pageData{Title: http.StatusText(code), Who: who(r), Write: s.cfg.Write,
		Auth: s.token != nil, Data: msg})
}

func (s *Server) snapData(r *http.Request) (any, []string, int, error) {
	sn, err := s.snapshot(r.Context())
	if err != nil {
		return nil, nil, 0, err
	}
	return sn, sn.Errors, http.StatusOK, nil
}

type overview struct {
	*snapshot
	States []stateCount
	Total  int
}

type stateCount struct {
	State string
	Count int
}

func (s *Server) overviewData(r *http.Request) (any, []string, int, error) {
	sn, err := s.snapshot(r.Context())
	if err != nil {
		return nil, nil, 0, err
	}
	o := overview{snapshot: sn, Total: len(sn.Jobs)}
	for _, st := range jobStates {
		o.States = append(o.States, stateCount{st, sn.ByState[st]})
	}
	return o, sn.Errors, http.StatusOK, nil
}

type jobsPage struct {
	F        jobFilter
	States   []string
	Vendors  []string
	Ages     []struct{ Value, Label string }
	Rows     []jobRow
	Now      time.Time
	Took     time.Duration // the listing's scan
	Total    int
	Matched  int
	Next     string // URL of the next page, "" when none
	First    string // URL of the first page, "" when on it
	Finished int64
}

func (s *Server) jobsData(r *http.Request) (any, []string, int, error) {
	sn, err := s.snapshot(r.Context())
	if err != nil {
		return nil, nil, 0, err
	}
	f, bad := filterOf(r.URL.Query())
	p := jobsPage{F: f, States: jobStates, Vendors: []string{"cbc", "cblr", "cytomic", "sophos"}, Ages: ageChoices,
		Now: sn.JobsAt, Took: sn.JobsTook, Total: len(sn.Jobs), Finished: sn.Finished}
	for _, row := range sn.Jobs {
		if !f.match(row, sn.At) {
			continue
		}
		p.Matched++
		if f.After != "" && !afterCursor(row, f.After) {
			continue
		}
		if len(p.Rows) < f.Limit {
			p.Rows = append(p.Rows, row)
		} else if p.Next == "" {
			p.Next = "/jobs" + f.query(cursorOf(p.Rows[len(p.Rows)-1]))
		}
	}
	if f.After != "" {
		p.First = "/jobs" + f.query("")
	}
	code := http.StatusOK
	if len(bad) > 0 {
		code = http.StatusBadRequest
	}
	return p, append(bad, sn.Errors...), code, nil
}

type finishedPage struct {
	Rows  []state.FinishedJob
	Total int64
	Next  string
	First string
}

func (s *Server) finishedData(r *http.Request) (any, []string, int, error) {
	after := r.URL.Query().Get("after")
	key := "finished:" + after
	v, err := s.remember(r.Context(), key, func(ctx context.Context) (any, error) {
		rows, next, err := s.st.Finished(ctx, after, 50)
		if err != nil {
			return nil, err
		}
		n, err := s.st.FinishedCount(ctx)
		if err != nil {
			return nil, err
		}
		p := finishedPage{Rows: rows, Total: n}
		if next != "" {
			p.Next = "/jobs/finished?after=" + url.QueryEscape(next)
		}
		if after != "" {
			p.First = "/jobs/finished"
		}
		return p, nil
	})
	if err != nil {
		if strings.Contains(err.Error(), "bad cursor") {
			return finishedPage{}, []string{"that page cursor is not valid: showing nothing; start from the first page"},
				http.StatusBadRequest, nil
		}
		return nil, nil, 0, err
	}
	return v, nil, http.StatusOK, nil
}

func (s *Server) jobData(r *http.Request) (any, []string, int, error) {
	id := job.CanonicalID(r.PathValue("id"))
	d, err := s.jobDetail(r.Context(), id)
	if err != nil {
		return nil, nil, 0, err
	}
	if !d.Found {
		return d, nil, http.StatusNotFound, nil
	}
	return d, nil, http.StatusOK, nil
}

// parsePages parses every page template with the layout.
func (s *Server) parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"scrub": s.scrub,
		"clip":  textfmt.Clip,
		"stamp": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05.000Z")
		},
		"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"rel":   textfmt.Relative,
		"dur":   textfmt.Duration,
		"lease": textfmt.Lease,
		"join":  strings.Join,
		"q":     url.QueryEscape,
		"pct":   func(a, b int) int { return a * 100 / max(b, 1) },
		"isRef": func(s string) bool { return strings.HasPrefix(s, "{") },
		"add":   func(a, b int) int { return a + b },
		"i64":   func(i int64) string { return strconv.FormatInt(i, 10) },
	}
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// urlQuery matches the query string of a URL in free text: pre-signed
// URLs carry their signature there.
var urlQuery = regexp.MustCompile(`(?i)(https?://[^\s"'<>?#]+)\?[^\s"'<>#]*`)

// scrub makes a text from the ledger or a vendor safe to show: the fleet's
// secrets masked and every URL's query string cut (pre-signed download
// URLs are credentials).
func (s *Server) scrub(v string) string {
	v = s.cfg.Redact.String(v)
	return urlQuery.ReplaceAllString(v, "$1?[query removed]")
}

func urlQueryEscape(v string) string { return url.QueryEscape(v) }
