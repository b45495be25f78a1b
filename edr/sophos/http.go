package sophos

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// call sends one data-region request with the bearer token and tenant
// header and reads the whole answer. On 401 with a cached token it fetches
// a new token and sends the request once more; a 401 with a token fetched
// for this call is a credential failure. Other statuses are returned for
// the caller to map.
func (d *Driver) call(ctx context.Context, op, method, path string, query url.Values, body []byte) (*httpc.Response, error) {
	var resp *httpc.Response
	err := d.authorized(ctx, op, func(tok string, ten tenancy) (int, error) {
		req, err := d.newRequest(ctx, method, path, query, body, tok, ten)
		if err != nil {
			return 0, err
		}
		if resp, err = d.api.Do(req); err != nil {
			return 0, d.transportError(op, err)
		}
		return resp.Status, nil
	}, func() failure { return failureOf(resp) })
	return resp, err
}

// stream sends one GET and returns its 2xx answer with the body still
// open (capped at max bytes); the caller closes it. Any other answer is a
// failure the caller maps: Sophos's error body is known only by its first
// few hundred bytes there.
func (d *Driver) stream(ctx context.Context, op, path string, query url.Values, max int64) (*http.Response, *failure, error) {
	var resp *http.Response
	var fail *failure
	err := d.authorized(ctx, op, func(tok string, ten tenancy) (int, error) {
		resp, fail = nil, nil // a retry after a 401 starts afresh
		req, err := d.newRequest(ctx, http.MethodGet, path, query, nil, tok, ten)
		if err != nil {
			return 0, err
		}
		resp, err = d.api.Stream(req, max)
		var se *httpc.StatusError
		switch {
		case err == nil:
			return resp.StatusCode, nil
		case errors.As(err, &se):
			fail = &failure{status: se.Status, se: se, body: []byte(se.Body)}
			return se.Status, nil
		case errors.Is(err, httpc.ErrTooLarge):
			return 0, d.transportError(op, err)
		}
		var te *httpc.TransportError
		if errors.As(err, &te) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, d.transportError(op, err)
		}
		// Stream refuses a redirect without saying its status.
		return 0, &edr.Error{Vendor: vendor, Op: op, Msg: "unexpected answer from Sophos (a redirect?); not followed", Err: errors.New(d.redact(err.Error()))}
	}, func() failure { return *fail })
	if err != nil {
		return nil, nil, err
	}
	return resp, fail, nil
}

// authorized runs send with a bearer token and the tenancy, once more
// with a fresh token when the cached one is refused (401). send returns the
// status it got.
func (d *Driver) authorized(ctx context.Context, op string, send func(tok string, ten tenancy) (int, error), failed func() failure) error {
	tok, fresh, err := d.tokens.get(ctx)
	if err != nil {
		return err
	}
	ten, err := d.tenancy(ctx, tok)
	if err != nil {
		return err
	}
	status, err := send(tok, ten)
	if err != nil || status != http.StatusUnauthorized {
		return err
	}
	if !fresh {
		d.tokens.invalidate(tok)
		if tok, _, err = d.tokens.get(ctx); err != nil {
			return err
		}
		if status, err = send(tok, ten); err != nil || status != http.StatusUnauthorized {
			return err
		}
	}
	return d.statusError(op, failed(), msgBadCredentials)
}

func (d *Driver) newRequest(ctx context.Context, method, path string, query url.Values, body []byte, tok string, ten tenancy) (*http.Request, error) {
	u := ten.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Msg: "cannot build the request", Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Tenant-ID", ten.tenant)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// failure is a non-2xx answer: its status, the StatusError internal/httpc
// made of it (nil for a 3xx), and its body (whole, or a snippet).
type failure struct {
	status int
	se     *httpc.StatusError
	body   []byte
}

func failureOf(resp *httpc.Response) failure {
	f := failure{status: resp.Status, body: resp.Body}
	var se *httpc.StatusError
	if errors.As(resp.Err(), &se) {
		f.se = se
	}
	return f
}

// Messages operators see for configuration failures.
const (
	msgForbidden      = "Sophos refused access to the tenant (check SOPHOS_TENANT_ID and that the credential may use the XDR Data Lake)"
	msgBadCredentials = "Sophos rejected the credentials (check SOPHOS_CLIENT_ID/SOPHOS_CLIENT_SECRET/SOPHOS_TENANT_ID)"
)

// statusError maps a non-2xx answer to an *edr.Error: 429 retryable with
// its Retry-After (Config.PollEvery when absent), 5xx retryable, the rest
// permanent. msg overrides the default explanation. What Sophos's error
// body says (error or code, message, correlationId, requestId) is added,
// the body itself is not kept.
func (d *Driver) statusError(op string, f failure, msg string) error {
	e := &edr.Error{Vendor: vendor, Op: op, Status: f.status, Msg: msg}
	if f.se != nil {
		cp := *f.se
		e.Err = &cp
		e.RetryAfter = cp.RetryAfter
		e.Retryable = cp.Retryable()
	}
	def := ""
	switch s := f.status; {
	case s == http.StatusTooManyRequests:
		def = "rate limited by Sophos"
		setRetry(e, cmp.Or(e.RetryAfter, d.pollEvery))
	case s >= 500:
		def = "Sophos is unavailable"
	case s == http.StatusUnauthorized:
		def = msgBadCredentials
	case s == http.StatusForbidden:
		def = msgForbidden
	case s == http.StatusBadRequest:
		def = "Sophos refused the request"
	case s >= 300 && s < 400:
		def = "unexpected redirect from Sophos (not followed)"
	default:
		def = "unexpected response from Sophos"
	}
	e.Msg = cmp.Or(e.Msg, def)
	d.describe(e, f.body)
	return e
}

// describe adds what Sophos's error body says to e. A body that is not
// Sophos's error shape is kept as a short redacted snippet instead.
func (d *Driver) describe(e *edr.Error, body []byte) {
	ae := decodeAPIError(body)
	se, _ := e.Err.(*httpc.StatusError)
	if ae.empty() {
		if se != nil {
			se.Body = d.redact(se.Body)
		}
		return
	}
	if se != nil {
		se.Body = "" // summarised below
	}
	code := ae.Code
	if code == "" || strings.Trim(code, "0123456789") == "" { // a numeric code repeats the status
		code = ae.Error
	}
	e.Code = d.redact(code)
	if ae.Message != "" {
		e.Msg += ": " + ae.Message
	}
	var ids []string
	if ae.CorrelationID != "" {
		ids = append(ids, "correlationId "+ae.CorrelationID)
	}
	if ae.RequestID != "" {
		ids = append(ids, "requestId "+ae.RequestID)
	}
	if len(ids) > 0 {
		e.Msg += " (" + strings.Join(ids, ", ") + ")"
	}
	e.Msg = d.redact(e.Msg)
}

// setRetry makes e retryable after delay. The wrapped StatusError carries
// the same delay: edr.RetryAfter reads it first.
func setRetry(e *edr.Error, delay time.Duration) {
	e.Retryable, e.RetryAfter = true, delay
	if se, ok := e.Err.(*httpc.StatusError); ok {
		se.RetryAfter = delay
	}
}

// notFound explains a 404 on a run: it is unknown or has expired.
func (d *Driver) notFound(op string, f failure, rf ref) error {
	msg := "the query run is unknown to Sophos"
	if rf.ExpiresAt != "" {
		msg += " (it expires at " + truncate(rf.ExpiresAt, 40) + ")"
	}
	return d.statusError(op, f, msg)
}

func (d *Driver) malformedError(op string, status int, err error) error {
	return &edr.Error{Vendor: vendor, Op: op, Status: status, Msg: "malformed response from Sophos", Err: err}
}

// transportError wraps a failure to get a response; the caller's context
// ending is returned as is.
func (d *Driver) transportError(op string, err error) error {
	if errors.Is(err, httpc.ErrTooLarge) {
		return &edr.Error{Vendor: vendor, Op: op, Msg: "response from Sophos too large", Err: err}
	}
	return edr.Wrap(vendor, op, err)
}

// secretForms returns the client secret as the driver's requests carry it
// (raw, form-encoded in the body, form-encoded then base64 in HTTP Basic)
// and as a server quoting it would show it (path- or JSON-escaped,
// percent-escapes in lower case, a space as %20). Redaction removes each.
func secretForms(id, secret string) []string {
	if secret == "" {
		return nil
	}
	qe, pe := url.QueryEscape(secret), url.PathEscape(secret)
	js, _ := json.Marshal(secret)
	jss := strings.Trim(string(js), `"`)
	forms := []string{secret, qe, pe, lowerEscapes(qe), lowerEscapes(pe), strings.ReplaceAll(qe, "+", "%20"),
		jss, strings.ReplaceAll(jss, "/", `\/`)}
	for _, user := range []string{id, url.QueryEscape(id)} {
		for _, pass := range []string{secret, qe} {
			cred := []byte(user + ":" + pass)
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				forms = append(forms, enc.EncodeToString(cred))
			}
		}
	}
	out := forms[:0]
	seen := map[string]bool{}
	for _, f := range forms {
		if f != "" && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// lowerEscapes lower-cases the hex digits of percent-escapes.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// redact removes the client secret (in all its forms) and bearer tokens
// from s, including one cut short at the end of s (error bodies are
// truncated snippets).
func (d *Driver) redact(s string) string {
	const minCut = 8
	for _, secret := range append(d.tokens.secrets(), d.secretForms...) {
		if secret == "" {
			continue
		}
		s = strings.ReplaceAll(s, secret, "[REDACTED]")
		for k := min(len(secret)-1, len(s)); k >= minCut; k-- {
			if strings.HasSuffix(s, secret[:k]) {
				s = s[:len(s)-k] + "[REDACTED]"
				break
			}
		}
	}
	return s
}
