// Package vendorhttp is what the EDR drivers (edr/cbc, edr/cblr,
// edr/cytomic, edr/sophos) share on top of internal/httpc: the one mapping
// of a vendor's HTTP answer to *edr.Error, the one refreshing OAuth token
// source (TokenSource), and the redaction every error text built from a
// vendor's answer goes through.
//
// # Status to error
//
// Classify is the table, decided once for every vendor (franz-go's
// pkg/kerr is the model):
//
//	status          class        retryable
//	3xx             Redirect     no   never followed: the credentials would go along
//	400             BadRequest   no
//	401             Credentials  no   after TokenSource's one new token, if any
//	403             Forbidden    no
//	404             NotFound     no
//	408, 425        Unavailable  yes
//	429             Throttled    yes  after Retry-After (API.Throttle when absent)
//	other 4xx       Refused      no
//	501, 505        Unavailable  no   the server will not do it, now or later
//	other 5xx       Unavailable  yes  after Retry-After, when given
//	anything else   Unexpected   no
//
// An API (one per vendor host) turns an answer into an *edr.Error: Status,
// Retryable and RetryAfter from the table; Code and the vendor's own words
// from its error body, read by a small per-vendor hook (API.Describe);
// the operator's hint for the class (API.Texts: "check SOPHOS_TENANT_ID");
// and the *httpc.StatusError as Err. A 2xx answer whose body is not what the
// vendor documents is Malformed (permanent, wrapping ErrMalformed); a
// request that got no answer is NoAnswer.
//
// # Redaction
//
// Vendors echo what they were sent, in whatever encoding. Every text an API
// builds from an answer (the body it keeps, the code and message Describe
// reads, the message it composes) goes through API.Redact, a redact.Set
// holding the driver's secrets in every wire form and every access token a
// TokenSource fetched; a body cut short is masked with redact.Set.Snippet.
// The mask is redact.Mask, "[REDACTED]", everywhere.
//
// # Bounded answers
//
// LongestToken measures the longest JSON value of an answer without decoding
// it, so a driver refuses one holding a string of megabytes before anything
// keeps it.
package vendorhttp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

// Class is what an HTTP status means to a caller of a vendor API.
type Class uint8

// The classes of Classify's table.
const (
	// Unexpected is a status no row names (1xx, a 2xx passed as an error).
	Unexpected Class = iota
	// Redirect is a 3xx: never followed, credentials would go along.
	Redirect
	// BadRequest is 400: the request was refused as invalid.
	BadRequest
	// Credentials is 401: the credentials or the access token were refused.
	Credentials
	// Forbidden is 403: authenticated, not allowed.
	Forbidden
	// NotFound is 404.
	NotFound
	// Refused is any other 4xx but 408, 425 and 429.
	Refused
	// Throttled is 429: retryable after its Retry-After.
	Throttled
	// Unavailable is a 5xx, 408 or 425: the server could not answer now.
	Unavailable
)

var classNames = [...]string{"unexpected", "redirect", "bad request", "credentials", "forbidden", "not found",
	"refused", "throttled", "unavailable"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", c)
}

// table is the status table: the first row whose range holds a status
// decides.
var table = []struct {
	from, to  int
	class     Class
	retryable bool
}{
	{300, 399, Redirect, false},
	{http.StatusBadRequest, http.StatusBadRequest, BadRequest, false},
	{http.StatusUnauthorized, http.StatusUnauthorized, Credentials, false},
	{http.StatusForbidden, http.StatusForbidden, Forbidden, false},
	{http.StatusNotFound, http.StatusNotFound, NotFound, false},
	{http.StatusRequestTimeout, http.StatusRequestTimeout, Unavailable, true},
	{http.StatusTooEarly, http.StatusTooEarly, Unavailable, true},
	{http.StatusTooManyRequests, http.StatusTooManyRequests, Throttled, true},
	{400, 499, Refused, false},
	{http.StatusNotImplemented, http.StatusNotImplemented, Unavailable, false},
	{http.StatusHTTPVersionNotSupported, http.StatusHTTPVersionNotSupported, Unavailable, false},
	{500, 599, Unavailable, true},
}

// Classify returns the class of status and whether the same request may
// succeed later.
func Classify(status int) (c Class, retryable bool) {
	for _, r := range table {
		if status >= r.from && status <= r.to {
			return r.class, r.retryable
		}
	}
	return Unexpected, false
}

// ErrMalformed is wrapped by every error Malformed returns: an answer whose
// body is not what the vendor documents.
var ErrMalformed = errors.New("malformed response")

// DefaultTexts are the explanations of classes an API's Texts leaves out.
var DefaultTexts = map[Class]string{
	Unexpected:  "unexpected answer",
	Redirect:    "unexpected redirect (not followed)",
	BadRequest:  "request refused as invalid",
	Credentials: "credentials refused",
	Forbidden:   "access forbidden",
	NotFound:    "not found",
	Refused:     "request refused",
	Throttled:   "rate limited",
	Unavailable: "service unavailable",
}

// API maps the answers of one vendor host to *edr.Error. Its methods are
// safe for concurrent use; its fields must not change once it is in use.
type API struct {
	// Vendor is edr.Error.Vendor ("cbc", "cblr", "cytomic", "sophos").
	Vendor string
	// Texts explains each class to an operator ("Sophos rejected the
	// credentials (check SOPHOS_CLIENT_ID/…)"). A class left out gets its
	// DefaultTexts entry; a class mapped to "" gets no text.
	Texts map[Class]string
	// Throttle is the delay a 429 without Retry-After asks for. Default
	// httpc.DefaultThrottle.
	Throttle time.Duration
	// Describe reads the vendor's own error code and words from an error
	// body (already redacted; possibly cut short). nil reads nothing. When
	// it finds something, the body itself is not kept in the error.
	Describe func(status int, body []byte) Detail
	// Quiet keeps no body in errors even when Describe finds nothing: for
	// identity services, which may quote the request and its secret.
	Quiet bool
	// Redact masks the driver's secrets and access tokens in every text
	// built from an answer. nil masks nothing.
	Redact *redact.Set
}

// Detail is what a vendor's error body says, as Describe reads it.
type Detail struct {
	// Code is the vendor's own error code (edr.Error.Code).
	Code string
	// Explain replaces the class's text when the vendor's code says more
	// than the status ("the query was refused as malformed").
	Explain string
	// Msg is the vendor's explanation, appended after the class's text.
	Msg string
	// Refs are the vendor's tracking references ("requestId 0ca2…"),
	// appended in parentheses.
	Refs []string
}

func (d Detail) empty() bool {
	return d.Code == "" && d.Explain == "" && d.Msg == "" && len(d.Refs) == 0
}

// Call names the call an answer belongs to.
type Call struct {
	// Op is edr.Error.Op ("start", "poll", "token", …).
	Op string
	// What names the request in the message ("GET session 12"); optional.
	What string
	// Msg replaces the class's text ("the query run is unknown to
	// Sophos"); optional.
	Msg string
}

// Error maps resp, an answer the caller did not expect (not a 2xx it
// understands), to an *edr.Error. The message is
//
//	[What: ]text[: vendor's words][ (refs)]
//
// where text is Call.Msg, else Detail.Explain, else the class's text.
func (a *API) Error(c Call, resp *httpc.Response) *edr.Error {
	var se *httpc.StatusError
	errors.As(resp.Err(), &se)
	return a.answer(c, resp.Status, resp.Body, se)
}

// StatusError is Error for an answer httpc.Client.Stream refused: its body
// is the snippet se carries.
func (a *API) StatusError(c Call, se *httpc.StatusError) *edr.Error {
	return a.answer(c, se.Status, []byte(se.Body), se)
}

func (a *API) answer(c Call, status int, body []byte, se *httpc.StatusError) *edr.Error {
	class, retryable := Classify(status)
	e := &edr.Error{Vendor: a.Vendor, Op: c.Op, Status: status, Retryable: retryable}
	red := []byte(a.Redact.Snippet(string(body)))
	var d Detail
	if a.Describe != nil {
		d = a.Describe(status, red)
	}
	if se != nil {
		cp := *se
		cp.Body = a.Redact.Snippet(cp.Body)
		if a.Quiet || !d.empty() {
			cp.Body = "" // summarised in the message, or never quoted
		}
		e.Err, e.RetryAfter = &cp, cp.RetryAfter
		if class == Throttled {
			cp.RetryAfter = cmp.Or(cp.RetryAfter, a.Throttle, httpc.DefaultThrottle)
			e.RetryAfter = cp.RetryAfter
		}
	} else if class == Throttled {
		e.RetryAfter = cmp.Or(a.Throttle, httpc.DefaultThrottle)
	}
	text, ok := a.Texts[class]
	if !ok {
		text = DefaultTexts[class]
	}
	msg := join(c.What, cmp.Or(c.Msg, d.Explain, text), d.Msg)
	if len(d.Refs) > 0 {
		msg += " (" + strings.Join(d.Refs, ", ") + ")"
	}
	e.Code = a.Redact.String(d.Code)
	e.Msg = a.Redact.String(msg)
	return e
}

// Malformed is the permanent error for a 2xx answer (status) whose body is
// not what the vendor documents; err says what is wrong with it and is
// wrapped so that it wraps ErrMalformed. The message is [What: ]Msg.
func (a *API) Malformed(c Call, status int, err error) *edr.Error {
	switch {
	case err == nil:
		err = ErrMalformed
	case !errors.Is(err, ErrMalformed):
		err = fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return &edr.Error{Vendor: a.Vendor, Op: c.Op, Status: status, Msg: a.Redact.String(join(c.What, c.Msg)),
		Err: a.Redact.Error(err)}
}

// NoAnswer maps the failure of a request that got no complete answer (the
// error httpc.Client.Do returns). The caller's own context ending is
// returned as such, not as a vendor failure; a body over the size cap is
// permanent; a transport failure or a per-request timeout is retryable.
func (a *API) NoAnswer(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s %s: %w", a.Vendor, op, ctx.Err())
	case errors.Is(err, httpc.ErrTooLarge):
		return &edr.Error{Vendor: a.Vendor, Op: op, Msg: "response too large", Err: a.Redact.Error(err)}
	}
	var ve *edr.Error
	if errors.As(err, &ve) {
		return err // a vendor error already
	}
	e, ok := edr.Wrap(a.Vendor, op, err).(*edr.Error)
	if !ok {
		return err // the caller's context
	}
	var te *httpc.TransportError
	if errors.As(err, &te) {
		e.Msg = "no response (network error or timeout)"
	}
	e.Err = a.Redact.Error(err)
	return e
}

// Mask returns err with the secrets masked in its text: for an error a
// driver builds from a vendor's words outside an HTTP status (a run that
// failed, machines' error codes). An *edr.Error stays one (a copy, its Msg
// and Code masked); errors.Is and errors.As see the same chain.
func (a *API) Mask(err error) error {
	e, ok := err.(*edr.Error)
	if !ok {
		return a.Redact.Error(err)
	}
	cp := *e
	cp.Msg, cp.Code, cp.Err = a.Redact.String(e.Msg), a.Redact.String(e.Code), a.Redact.Error(e.Err)
	return &cp
}

// join joins the non-empty parts with ": ".
func join(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}
