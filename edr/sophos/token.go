package sophos

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// tokenSource caches the bearer token of the client-credentials grant and
// refreshes it shortly before it expires. One fetch at a time: concurrent
// callers wait for it (or for their context). Safe for concurrent use.
type tokenSource struct {
	d   *Driver
	sem chan struct{} // held while fetching

	mu        sync.Mutex
	tok       string
	refreshAt time.Time
	previous  string // the token tok replaced (for redaction only)
}

func newTokenSource(d *Driver) *tokenSource {
	return &tokenSource{d: d, sem: make(chan struct{}, 1)}
}

// cached returns the token if it is still good to use.
func (ts *tokenSource) cached() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != "" && ts.d.now().Before(ts.refreshAt) {
		return ts.tok
	}
	return ""
}

// get returns a usable token. fresh reports that this call fetched it, so a
// 401 with it means the credentials themselves are refused.
func (ts *tokenSource) get(ctx context.Context) (tok string, fresh bool, err error) {
	if tok := ts.cached(); tok != "" {
		return tok, false, nil
	}
	select {
	case ts.sem <- struct{}{}:
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
	defer func() { <-ts.sem }()
	if tok := ts.cached(); tok != "" { // another caller refreshed it meanwhile
		return tok, false, nil
	}
	t, err := ts.fetch(ctx)
	if err != nil {
		return "", false, err
	}
	// Refresh a little before expiry: a tenth of the lifetime, at most a
	// minute, so a token is never sent in its last seconds.
	margin := min(t.ttl/10, time.Minute)
	ts.mu.Lock()
	if ts.tok != "" {
		ts.previous = ts.tok
	}
	ts.tok, ts.refreshAt = t.access, ts.d.now().Add(t.ttl-margin)
	ts.mu.Unlock()
	return t.access, true, nil
}

// invalidate drops tok if it is still the cached token (a 401 said it is
// no longer accepted).
func (ts *tokenSource) invalidate(tok string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok == tok {
		ts.previous, ts.tok, ts.refreshAt = tok, "", time.Time{}
	}
}

// secrets returns the tokens errors must never contain.
func (ts *tokenSource) secrets() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return []string{ts.tok, ts.previous}
}

// fetch runs the client-credentials grant. The credentials go in the form
// body, as Sophos documents; when the server answers 401 to that, it is
// asked once more with HTTP Basic client authentication (RFC 6749 §2.3.1),
// which some OAuth servers require.
func (ts *tokenSource) fetch(ctx context.Context) (token, error) {
	resp, err := ts.request(ctx, false)
	if err == nil && resp.Status == http.StatusUnauthorized {
		resp, err = ts.request(ctx, true)
	}
	if err != nil {
		return token{}, err
	}
	switch {
	case resp.Status >= 200 && resp.Status < 300:
	case resp.Status == http.StatusBadRequest || resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden:
		// The identity service answers 400 invalid_client / 401 for a wrong
		// ID or secret: nothing a retry can fix.
		return token{}, ts.refused(resp, msgBadCredentials)
	default:
		return token{}, ts.refused(resp, "")
	}
	t, err := decodeToken(resp.Body)
	if err != nil {
		return token{}, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status,
			Msg: "malformed response from the Sophos identity service", Err: err}
	}
	return t, nil
}

// refused maps a refused token request. Of the identity service's answer
// only the status, its errorCode and trackingId are kept: whatever else it
// says may quote the request, and the request carries the client secret
// (in the form, or base64 in the Authorization header).
func (ts *tokenSource) refused(resp *httpc.Response, msg string) error {
	d := ts.d
	f := failureOf(resp)
	if f.se != nil {
		cp := *f.se
		cp.Body = ""
		f.se = &cp
	}
	f.body = nil
	err := d.statusError("token", f, msg)
	var e *edr.Error
	if errors.As(err, &e) {
		ie := decodeIdentityError(resp.Body)
		e.Code = d.redact(ie.ErrorCode)
		if ie.TrackingID != "" {
			e.Msg += " (trackingId " + d.redact(ie.TrackingID) + ")"
		}
	}
	return err
}

// request sends one token request: the credentials in the form body, or
// with basic in an Authorization: Basic header (each part form-encoded, as
// RFC 6749 §2.3.1 asks) and not in the body.
func (ts *tokenSource) request(ctx context.Context, basic bool) (*httpc.Response, error) {
	d := ts.d
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"token"}}
	if !basic {
		form.Set("client_id", d.cfg.ClientID)
		form.Set("client_secret", d.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "token", Msg: "cannot build the token request"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(d.cfg.ClientID), url.QueryEscape(d.cfg.ClientSecret))
	}
	resp, err := d.auth.Do(req)
	if err != nil {
		return nil, d.transportError("token", err)
	}
	return resp, nil
}
