package sophos

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

// call sends one data-region request with the bearer token and tenant
// header and reads the whole answer. On 401 with a kept token it fetches a
// new token and sends the request once more; a 401 with a token fetched for
// this call is a credential failure. Other statuses are returned for the
// caller to map.
func (d *Driver) call(ctx context.Context, op, method, path string, query url.Values, body []byte) (*httpc.Response, error) {
	var resp *httpc.Response
	refused, err := d.authorized(ctx, func(tok string, ten tenancy) (int, error) {
		req, err := d.newRequest(ctx, method, path, query, body, tok, ten)
		if err != nil {
			return 0, err
		}
		if resp, err = d.api.Do(req); err != nil {
			return 0, d.answers.NoAnswer(ctx, op, err)
		}
		return resp.Status, nil
	})
	switch {
	case err != nil:
		return nil, err
	case refused:
		return nil, d.answers.Error(vendorhttp.Call{Op: op}, resp)
	}
	return resp, nil
}

// stream sends one GET and returns its 2xx answer with the body still
// open (capped at max bytes); the caller closes it. Any other answer is
// returned as the *httpc.StatusError the caller maps: Sophos's error body is
// known only by its first few hundred bytes there.
func (d *Driver) stream(ctx context.Context, op, path string, query url.Values, max int64) (*http.Response, *httpc.StatusError, error) {
	var resp *http.Response
	var fail *httpc.StatusError
	refused, err := d.authorized(ctx, func(tok string, ten tenancy) (int, error) {
		resp, fail = nil, nil // a retry after a 401 starts afresh
		req, err := d.newRequest(ctx, http.MethodGet, path, query, nil, tok, ten)
		if err != nil {
			return 0, err
		}
		resp, err = d.api.Stream(req, max)
		var te *httpc.TransportError
		switch {
		case err == nil:
			return resp.StatusCode, nil
		case errors.As(err, &fail):
			return fail.Status, nil
		case errors.Is(err, httpc.ErrTooLarge), errors.As(err, &te),
			errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return 0, d.answers.NoAnswer(ctx, op, err)
		}
		// Stream refuses a redirect without saying its status.
		return 0, &edr.Error{Vendor: vendor, Op: op, Msg: "unexpected answer from Sophos (a redirect?); not followed", Err: d.redact.Error(err)}
	})
	switch {
	case err != nil:
		return nil, nil, err
	case refused:
		return nil, nil, d.answers.StatusError(vendorhttp.Call{Op: op}, fail)
	}
	return resp, fail, nil
}

// authorized runs send with a bearer token and the tenancy, once more with
// a new token when a kept one is refused (401; see vendorhttp.TokenSource).
// send returns the status it got; refused says the last one was 401.
func (d *Driver) authorized(ctx context.Context, send func(tok string, ten tenancy) (int, error)) (refused bool, err error) {
	return d.tokens.Do(ctx, func(tok string) (bool, error) {
		ten, err := d.tenancy(ctx, tok)
		if err != nil {
			return false, err
		}
		status, err := send(tok, ten)
		return status == http.StatusUnauthorized, err
	})
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

// Messages operators see for configuration failures.
const (
	msgForbidden      = "Sophos refused access to the tenant (check SOPHOS_TENANT_ID and that the credential may use the XDR Data Lake)"
	msgBadCredentials = "Sophos rejected the credentials (check SOPHOS_CLIENT_ID/SOPHOS_CLIENT_SECRET/SOPHOS_TENANT_ID)"
)

// texts explains each class of answer of the data region and whoami; a 429
// is retryable after its Retry-After (Config.PollEvery when absent).
var texts = map[vendorhttp.Class]string{
	vendorhttp.Throttled:   "rate limited by Sophos",
	vendorhttp.Unavailable: "Sophos is unavailable",
	vendorhttp.Credentials: msgBadCredentials,
	vendorhttp.Forbidden:   msgForbidden,
	vendorhttp.BadRequest:  "Sophos refused the request",
	vendorhttp.Redirect:    "unexpected redirect from Sophos (not followed)",
	vendorhttp.NotFound:    "unexpected response from Sophos",
	vendorhttp.Refused:     "unexpected response from Sophos",
	vendorhttp.Unexpected:  "unexpected response from Sophos",
}

// newAPIs returns the mappers of the data region's (and whoami's) answers
// and of the identity service's. What Sophos's error body says (error or
// code, message, correlationId, requestId) is added to the message, the
// body itself is not kept. Of the identity service's answer only its
// errorCode and trackingId are kept, never its body: it may quote the
// request, and the request carries the client secret. A wrong ID or secret
// (400 invalid_client, 401, 403) is a credentials failure there.
func newAPIs(pollEvery time.Duration, red *redact.Set) (api, identity *vendorhttp.API) {
	api = &vendorhttp.API{Vendor: vendor, Texts: texts, Throttle: pollEvery, Describe: describeAPIError, Redact: red}
	idTexts := map[vendorhttp.Class]string{}
	for c, t := range texts {
		idTexts[c] = t
	}
	idTexts[vendorhttp.BadRequest], idTexts[vendorhttp.Forbidden] = msgBadCredentials, msgBadCredentials
	identity = &vendorhttp.API{Vendor: vendor, Texts: idTexts, Throttle: pollEvery, Describe: describeIdentityError,
		Quiet: true, Redact: red}
	return api, identity
}

// describeAPIError reads Sophos's error shape (decodeAPIError) for
// vendorhttp: a numeric code repeats the status, so "error" stands in.
func describeAPIError(_ int, body []byte) vendorhttp.Detail {
	ae := decodeAPIError(body)
	code := ae.Code
	if code == "" || strings.Trim(code, "0123456789") == "" {
		code = ae.Error
	}
	d := vendorhttp.Detail{Code: code, Msg: ae.Message}
	if ae.CorrelationID != "" {
		d.Refs = append(d.Refs, "correlationId "+ae.CorrelationID)
	}
	if ae.RequestID != "" {
		d.Refs = append(d.Refs, "requestId "+ae.RequestID)
	}
	return d
}

// describeIdentityError reads the identity service's errorCode and
// trackingId (decodeIdentityError) for vendorhttp.
func describeIdentityError(_ int, body []byte) vendorhttp.Detail {
	ie := decodeIdentityError(body)
	d := vendorhttp.Detail{Code: ie.ErrorCode}
	if ie.TrackingID != "" {
		d.Refs = []string{"trackingId " + ie.TrackingID}
	}
	return d
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
func notFound(op string, rf ref) vendorhttp.Call {
	msg := "the query run is unknown to Sophos"
	if rf.ExpiresAt != "" {
		msg += " (it expires at " + truncate(rf.ExpiresAt, 40) + ")"
	}
	return vendorhttp.Call{Op: op, Msg: msg}
}
