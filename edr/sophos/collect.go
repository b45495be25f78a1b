package sophos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// Bounds on the in-process memory of partly collected runs.
const (
	maxPartials = 64
	partialTTL  = time.Hour
)

// partial is how far Collect got through one run's result pages.
type partial struct {
	key     string // pageFromKey of the next page; "" = first page
	started bool   // the first page has been read
	rows    int64
	pages   int
	bytes   int64
	empty   int // consecutive empty pages
	hosts   map[string]struct{}
	listed  []string
	touched time.Time
}

// Collect pages through the results of a finished run (Config.PageSize
// rows a page, following pages.nextKey until it is absent or empty) and
// summarises them: Rows is the number of rows, Hosts the distinct
// meta_hostname values (endpoint_id when a row has no host name), capped at
// edr.MaxListed. It stops after Config.MaxRows rows, Config.MaxPages pages
// or Config.MaxResultBytes bytes and says in Notes that the result is
// truncated. A row larger than Config.MaxRowBytes fails Collect
// permanently.
//
// When a page after the first is answered 400, 404 or 422, or is the same
// page again (pageFromKey ignored), Collect stops paging and returns what it
// has, with a note that the result may be truncated. Errors on the first
// page fail Collect as usual.
//
// When a page fails with a retryable error, the progress so far is kept in
// this Driver and the next Collect of the same run resumes from that page.
func (d *Driver) Collect(ctx context.Context, r edr.Ref) (edr.Result, error) {
	rf, err := parseRef("collect", r)
	if err != nil {
		return edr.Result{}, err
	}
	p := d.takePartial(rf.RunID)
	for {
		done, err := d.nextPage(ctx, rf, p)
		if err != nil {
			if edr.IsRetryable(err) || ctx.Err() != nil {
				d.putPartial(rf.RunID, p)
			}
			return edr.Result{}, err
		}
		if done != "" {
			res := edr.Result{Rows: p.rows, Hosts: p.listed, HostsTotal: len(p.hosts)}
			if done != "complete" {
				res.Notes = append(res.Notes, done)
			}
			return res, nil
		}
	}
}

// nextPage fetches and folds in one page. It returns a non-empty reason
// when paging is over: "complete", or a note for the analyst.
func (d *Driver) nextPage(ctx context.Context, rf ref, p *partial) (string, error) {
	size := strconv.Itoa(d.pageSize)
	// pageSize is Sophos's documented parameter; maxSize is the guide's,
	// and SEKOIA's connector sends both.
	q := url.Values{"pageSize": {size}, "maxSize": {size}}
	if p.key != "" {
		q.Set("pageFromKey", p.key)
	}
	resp, fail, err := d.stream(ctx, "collect", rf.path("/results"), q, d.maxPageBytes)
	if err != nil {
		return "", err
	}
	if fail != nil {
		return d.pageRefused(p, rf, fail)
	}
	defer resp.Body.Close()
	page, err := decodeResults(resp.Body, d.maxRowBytes)
	switch {
	case errors.Is(err, errValueTooLarge):
		return "", &edr.Error{Vendor: vendor, Op: "collect", Status: resp.StatusCode,
			Msg: fmt.Sprintf("Sophos sent a result row larger than %d bytes (Config.MaxRowBytes); the results cannot be read", d.maxRowBytes)}
	case errors.Is(err, httpc.ErrTooLarge):
		return "", &edr.Error{Vendor: vendor, Op: "collect", Status: resp.StatusCode,
			Msg: fmt.Sprintf("Sophos sent a results page larger than %d bytes; the results cannot be read", d.maxPageBytes), Err: err}
	case errors.Is(err, errMalformed):
		return "", d.answers.Malformed(vendorhttp.Call{Op: "collect"}, resp.StatusCode, err)
	case err != nil:
		return "", d.answers.NoAnswer(ctx, "collect", err)
	}
	if p.started && page.NextKey != "" && page.NextKey == p.key {
		// The server ignored pageFromKey and sent the same page again: its
		// rows are already counted.
		return fmt.Sprintf("stopped paging after %d rows: Sophos answered the request for the next page with the same page again (pageFromKey ignored); the result may be truncated", p.rows), nil
	}
	p.started = true
	p.pages++
	p.bytes += page.Read
	p.rows += int64(len(page.Hosts))
	for _, h := range page.Hosts {
		if h == "" {
			continue
		}
		if _, seen := p.hosts[h]; !seen {
			p.hosts[h] = struct{}{}
			if len(p.listed) < edr.MaxListed {
				p.listed = append(p.listed, h)
			}
		}
	}
	if len(page.Hosts) == 0 {
		p.empty++
	} else {
		p.empty = 0
	}
	p.key = page.NextKey
	switch {
	case p.key == "":
		return "complete", nil
	case len(p.key) > maxKeyLen:
		return fmt.Sprintf("stopped paging after %d rows: Sophos's key for the next page is longer than %d bytes; the result is truncated", p.rows, maxKeyLen), nil
	case p.rows >= d.maxRows:
		return fmt.Sprintf("stopped after %d rows (the limit); Sophos has more results: the result is truncated, narrow the query to see them all", p.rows), nil
	case p.pages >= d.maxPages:
		return fmt.Sprintf("stopped after %d result pages (the limit) and %d rows; Sophos has more pages: the result is truncated", p.pages, p.rows), nil
	case p.bytes >= d.maxResultBytes:
		return fmt.Sprintf("stopped after %d bytes of results (the limit) and %d rows; Sophos has more pages: the result is truncated", p.bytes, p.rows), nil
	case p.empty >= maxEmptyPages:
		return fmt.Sprintf("stopped after %d empty result pages in a row; the counts may be incomplete (truncated)", p.empty), nil
	}
	return "", nil
}

// pageRefused maps a refused results page.
func (d *Driver) pageRefused(p *partial, rf ref, f *httpc.StatusError) (string, error) {
	switch {
	case p.started && laterPageRefused(f.Status):
		// A server that does not take pageFromKey may refuse it. What the
		// earlier pages found is still worth reporting.
		return fmt.Sprintf("stopped paging after %d rows: Sophos answered HTTP %d to the request for the next page (pageFromKey); the result may be truncated", p.rows, f.Status), nil
	case f.Status == http.StatusNotFound:
		return "", d.answers.StatusError(notFound("collect", rf), f)
	case f.Status == http.StatusConflict:
		// Results asked for before the run finished (the simulator's
		// answer; the guide is silent): worth asking again later.
		e := d.answers.StatusError(vendorhttp.Call{Op: "collect", Msg: "the query run has not finished yet"}, f)
		setRetry(e, max(e.RetryAfter, d.pollEvery))
		return "", e
	}
	return "", d.answers.StatusError(vendorhttp.Call{Op: "collect"}, f)
}

// laterPageRefused reports whether status, the answer to a request for a
// page after the first, says the server does not page this way (rather than
// that something is wrong with the run, the credentials or the service).
func laterPageRefused(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// takePartial removes and returns the saved progress for runID, or a fresh
// one. Taking it out means two concurrent Collects of one run do not share
// state.
func (d *Driver) takePartial(runID string) *partial {
	d.partialMu.Lock()
	defer d.partialMu.Unlock()
	if p, ok := d.partials[runID]; ok {
		delete(d.partials, runID)
		return p
	}
	return &partial{hosts: map[string]struct{}{}}
}

// putPartial saves progress for a later Collect, evicting stale entries and,
// beyond maxPartials, the least recently used one.
func (d *Driver) putPartial(runID string, p *partial) {
	if !p.started {
		return
	}
	d.partialMu.Lock()
	defer d.partialMu.Unlock()
	now := d.now()
	p.touched = now
	for id, q := range d.partials {
		if now.Sub(q.touched) > partialTTL {
			delete(d.partials, id)
		}
	}
	for len(d.partials) >= maxPartials {
		oldest := ""
		for id, q := range d.partials {
			if oldest == "" || q.touched.Before(d.partials[oldest].touched) {
				oldest = id
			}
		}
		delete(d.partials, oldest)
	}
	d.partials[runID] = p
}

func (d *Driver) dropPartial(runID string) {
	d.partialMu.Lock()
	delete(d.partials, runID)
	d.partialMu.Unlock()
}
