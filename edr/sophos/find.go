package sophos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// Bounds on a run name.
const (
	runNamePrefix = "analysisfleet "
	maxNameJob    = 40
	nameHashLen   = 16
)

// RunName is the name the run started for t under in carries:
// "analysisfleet <job> <hash>", where <job> is the job ID (letters, digits
// and ._:- only, at most 40 of them) so an analyst can tell the run in
// Sophos Central, and <hash> the first 16 hex digits of the SHA-256 of the
// intent key, which tells one start attempt from another. Sophos documents
// no limit on names; this one stays under 72 plain ASCII characters.
func RunName(t edr.Target, in edr.Intent) string {
	job := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == ':', r == '-':
			return r
		}
		return '_'
	}, t.JobID)
	if len(job) > maxNameJob {
		job = job[:maxNameJob]
	}
	if job == "" {
		job = "-"
	}
	sum := sha256.Sum256([]byte(in.Key))
	return runNamePrefix + job + " " + hex.EncodeToString(sum[:])[:nameHashLen]
}

// maxFindLookups bounds the runs Find reads one by one because the listing
// did not say their names.
const maxFindLookups = 25

// Find looks for the run a Start(t, in) may have launched. It lists the
// tenant's runs newest first (GET /queries/runs?order=desc, FindPageSize a
// page, at most Config.FindPages pages), considers the runs created at or
// after in.At − FindClockMargin on Sophos's clock (from the answer's Date
// header; in.At − edr.FindSkew without one), and returns the one whose name is
// RunName(t, in). A listed run without a name is read (GET /runs/{id}, at
// most 25 such reads) to learn it; a run Sophos keeps no name for matches
// when its template and window are the ones Start sends. Find answers
// edr.ErrNotStarted once the listing has reached its end or, being newest
// first, runs older than the cut-off; a listing that is neither within the
// page bound is an error (not retryable: the runner then starts again).
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	req, err := d.request(t, in)
	if err != nil {
		e := err.(*edr.Error)
		e.Op = "find"
		return nil, e
	}
	cutoff := in.Time().Add(-edr.FindSkew)
	f := finder{d: d, req: req, cutoff: cutoff, sorted: true}
	for page := 1; page <= d.findPages; page++ {
		list, err := f.list(ctx, page)
		if err != nil {
			return nil, err
		}
		if page == 1 && !list.serverNow.IsZero() {
			// Sophos's clock is known to a second: look back only as far
			// as clock skew can hide a run, not edr.FindSkew. With many
			// runs a minute, that is the difference between a page or two
			// and never reaching the cut-off.
			offset := list.serverNow.Sub(list.localNow)
			if tight := in.Time().Add(offset - FindClockMargin); tight.After(f.cutoff) {
				f.cutoff = tight
			}
		}
		for _, run := range list.Items {
			run, ok, err := f.match(ctx, run)
			if err != nil {
				return nil, err
			}
			if ok {
				return encodeRef("find", run)
			}
		}
		switch {
		case len(list.Items) == 0,
			list.Total > 0 && page >= list.Total,
			list.Size > 0 && len(list.Items) < list.Size:
			return nil, edr.ErrNotStarted // the end of the listing
		case f.sorted && f.seenOld:
			return nil, edr.ErrNotStarted // newest first, and past the cut-off
		}
	}
	return nil, &edr.Error{Vendor: vendor, Op: "find",
		Msg: fmt.Sprintf("could not tell whether the run was started: %d pages of runs (Config.FindPages) did not reach runs older than %s", d.findPages, cutoff.UTC().Format(stampLayout))}
}

// finder is one Find's state.
type finder struct {
	d       *Driver
	req     request
	cutoff  time.Time
	lookups int
	// sorted stays true while every run listed so far was created no later
	// than the one before it (newest first, as asked); seenOld says a run
	// older than the cut-off was listed.
	sorted, seenOld bool
	last            time.Time
}

func (f *finder) list(ctx context.Context, page int) (runList, error) {
	d := f.d
	q := url.Values{"page": {strconv.Itoa(page)}, "pageSize": {strconv.Itoa(FindPageSize)},
		"pageTotal": {"true"}, "order": {"desc"}}
	resp, err := d.call(ctx, "find", http.MethodGet, RunsPath, q, nil)
	if err != nil {
		return runList{}, err
	}
	if resp.Status < 200 || resp.Status >= 300 {
		return runList{}, d.answers.Error(vendorhttp.Call{Op: "find", Msg: "cannot list the query runs"}, resp)
	}
	list, err := decodeRunList(resp.Body)
	if err != nil {
		return runList{}, d.answers.Malformed(vendorhttp.Call{Op: "find"}, resp.Status, err)
	}
	list.localNow = time.Now()
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		list.serverNow = t
	}
	return list, nil
}

// match says whether run is the one Start sent req for, reading it when
// the listing left its name out (the run returned is then the one read).
func (f *finder) match(ctx context.Context, run runState) (runState, bool, error) {
	created, known := parseStamp(run.CreatedAt)
	if !known {
		f.sorted = false // cannot tell the order, so the listing is read to its end
	} else {
		if !f.last.IsZero() && created.After(f.last) {
			f.sorted = false
		}
		f.last = created
		if created.Before(f.cutoff) {
			f.seenOld = true
			return run, false, nil
		}
	}
	if !run.HasName {
		full, err := f.read(ctx, run.ID)
		if err != nil || full.ID == "" { // "" : gone since it was listed
			return run, false, err
		}
		run = full
	}
	if run.HasName && run.Name != "" {
		return run, run.Name == f.req.name, nil
	}
	// Sophos kept no name for the run (it may take it elsewhere than where
	// it was sent): the query and its window, derived from the intent to
	// the millisecond, identify the start as well.
	return run, run.Template == f.req.sql && sameStamp(run.From, f.req.from) && sameStamp(run.To, f.req.to), nil
}

// read fetches one run, for its name.
func (f *finder) read(ctx context.Context, id string) (runState, error) {
	d := f.d
	if f.lookups >= maxFindLookups {
		return runState{}, &edr.Error{Vendor: vendor, Op: "find",
			Msg: fmt.Sprintf("could not tell whether the run was started: the run listing gives no names and more than %d runs are recent", maxFindLookups)}
	}
	f.lookups++
	rf := ref{RunID: id}
	resp, err := d.call(ctx, "find", http.MethodGet, rf.path(""), nil, nil)
	if err != nil {
		return runState{}, err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return runState{}, nil // gone since it was listed: not ours to resume
	case resp.Status < 200 || resp.Status >= 300:
		return runState{}, d.answers.Error(vendorhttp.Call{Op: "find", Msg: "cannot read a listed query run"}, resp)
	}
	run, err := decodeRun(resp.Body)
	if err != nil {
		return runState{}, d.answers.Malformed(vendorhttp.Call{Op: "find"}, resp.Status, err)
	}
	run.ID = id // the run asked for, whatever the answer says
	return run, nil
}

func parseStamp(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

func sameStamp(a, b string) bool {
	ta, oka := parseStamp(a)
	tb, okb := parseStamp(b)
	return oka && okb && ta.Equal(tb)
}
