package cbc

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
)

// Find looks for the export a Start(t, in) may have launched, in the job
// list (GET /jobs/v1/orgs/{org_key}/jobs: the SDK's JobQuery, which sends
// no parameters and reads "results"; the service shows a key only the jobs
// it started, kept 30 days).
//
// A listed job is the one when it is an event export (type event_export,
// or no type), was created at or after Intent.At − edr.FindSkew (a job
// without a create_time is judged on its parameters alone), and its
// job_parameters hold exactly the request Start sends for this intent: the
// same query, the same time_range.start (Intent.At − Window, to the
// millisecond), the same rows where given. The Job Service has no name or
// label a start request can set, so the intent key itself cannot be
// matched; the millisecond start time is what tells two intents apart.
//
// Two matches mean the same intent was started twice (a start whose answer
// was lost, then re-sent before the list showed the first). Both are the
// same query over the same window, so either gives the same result; Find
// picks the oldest (then the lowest ID) so that every worker picks the same
// one, and the other is abandoned (the service has no cancel).
//
// The first page is requested without parameters, as the SDK does. When
// the answer says there are more (num_found above what it held), the next
// pages are asked for with start/rows; Find stops when the list is read,
// when a page brings nothing new (the service ignores paging), or at
// FindMaxPages. Each page is capped at FindMaxBytes.
//
// Find answers edr.ErrNotStarted only when the whole list (or, listed
// newest first, all of it created since the cut-off) was read and no job
// matched, and no event export from the window had parameters it could not
// read. Anything else it cannot decide is a permanent error saying why (the
// runner then starts again); transport failures, 429 and 5xx are
// retryable.
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "find", Msg: "refusing to build the query", Err: err}
	}
	want := d.request(sha, in)
	wantStart := d.timeStart(in)
	cutoff := in.Time().Add(-edr.FindSkew)

	var (
		matches    []jobInfo
		unreadable int // event exports in the window whose parameters can't be read
		seen       = map[string]bool{}
		numFound   int64
		pageRows   int
		newestDesc = true // every page so far listed newest first
		last       time.Time
		why        string // the list could not be read to its end
	)
	for page := 0; ; page++ {
		if page == d.cfg.FindMaxPages {
			why = fmt.Sprintf("the job list is longer than %d pages", d.cfg.FindMaxPages)
			break
		}
		path := "/jobs"
		if page > 0 {
			q := url.Values{}
			q.Set("start", strconv.Itoa(len(seen)))
			q.Set("rows", strconv.Itoa(pageRows))
			path += "?" + q.Encode()
		}
		l, err := d.listPage(ctx, path)
		if err != nil {
			return nil, err
		}
		fresh := 0
		for _, j := range l.Jobs {
			if seen[j.ID] {
				continue
			}
			seen[j.ID] = true
			fresh++
			if !j.Created.IsZero() {
				if !last.IsZero() && j.Created.After(last) {
					newestDesc = false
				}
				last = j.Created
			}
			switch match(j, want, wantStart, cutoff) {
			case matched:
				matches = append(matches, j)
			case unknown:
				unreadable++
			}
		}
		unreadable += l.Unreadable
		if page == 0 {
			// The service's own page size is asked for again.
			numFound, pageRows = l.NumFound, max(l.Listed, 1)
		}
		if numFound < 0 || int64(len(seen)) >= numFound {
			break // the whole list
		}
		if newestDesc && !last.IsZero() && last.Before(cutoff) {
			// Listed newest first and already past the cut-off: what
			// follows was created too early to be this start's.
			break
		}
		if fresh == 0 {
			why = "the job list is longer than one answer and the service did not page it"
			break
		}
	}
	if len(matches) > 0 {
		slices.SortFunc(matches, func(a, b jobInfo) int {
			if c := a.Created.Compare(b.Created); c != 0 && !a.Created.IsZero() && !b.Created.IsZero() {
				return c
			}
			return compareIDs(a.ID, b.ID)
		})
		if len(matches) > 1 {
			ids := make([]string, len(matches))
			for i, m := range matches {
				ids[i] = m.ID
			}
			d.log.Warn("the same start intent matches several export jobs; using the oldest",
				zap.String("intent", in.Key), zap.Strings("job_ids", ids))
		}
		return refOf(matches[0].ID)
	}
	switch {
	case why != "":
		return nil, &edr.Error{Vendor: vendor, Op: "find", Msg: "cannot tell whether the export was started: " + why}
	case unreadable > 0:
		return nil, &edr.Error{Vendor: vendor, Op: "find", Msg: fmt.Sprintf(
			"cannot tell whether the export was started: %d recent export job(s) in the list do not show their parameters", unreadable)}
	}
	return nil, edr.ErrNotStarted
}

// listPage reads one answer of the job list.
func (d *Driver) listPage(ctx context.Context, path string) (jobList, error) {
	resp, err := d.call(ctx, d.list, "find", http.MethodGet, path, nil)
	if err != nil {
		return jobList{}, err
	}
	return decodeAnswer(d, "find", resp, decodeJobList)
}

type verdict int

const (
	unrelated verdict = iota // another job
	matched                  // this intent's export
	unknown                  // an export from the window whose parameters can't be read
)

// match judges listed job j against the request want.
func match(j jobInfo, want startBody, wantStart, cutoff time.Time) verdict {
	if j.Type != "" && j.Type != "event_export" {
		return unrelated
	}
	if !j.Created.IsZero() && j.Created.Before(cutoff) {
		return unrelated
	}
	p := j.Params
	if !p.ok {
		return unknown
	}
	switch {
	case p.Query != want.Query.Query,
		!p.Start.Equal(wantStart),
		p.Rows >= 0 && p.Rows != int64(want.Query.Rows),
		p.APIResource != "" && p.APIResource != want.APIResource:
		return unrelated
	}
	return matched
}

// compareIDs orders job IDs numerically when both are numbers.
func compareIDs(a, b string) int {
	na, ea := strconv.ParseInt(a, 10, 64)
	nb, eb := strconv.ParseInt(b, 10, 64)
	if ea == nil && eb == nil {
		return cmp.Compare(na, nb)
	}
	return strings.Compare(a, b)
}
