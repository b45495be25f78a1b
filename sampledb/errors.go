package sampledb

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Sentinels for the conditions callers branch on. A *Error matches the one
// for its status with errors.Is.
var (
	// ErrPrecondition is a 412: SampleDB refused a transition outside its
	// state machine (e.g. a finished job moved to another terminal state).
	ErrPrecondition = errors.New("sampledb: transition refused (412)")
	// ErrNotFound is a 404: the job or task does not exist (any more).
	ErrNotFound = errors.New("sampledb: not found (404)")
	// ErrUnauthorized is a 401: the API key is missing, unknown or expired.
	ErrUnauthorized = errors.New("sampledb: unauthorized (401)")
	// ErrForbidden is a 403: the API key's role does not allow the call.
	ErrForbidden = errors.New("sampledb: forbidden (403)")
	// ErrMalformed is a 2xx response whose body is not a valid Argus
	// envelope carrying what the call expects. It is permanent.
	ErrMalformed = errors.New("malformed SampleDB response")
	// ErrBadAnswer is a 2xx response about another job than the one the
	// call was about (a *BadAnswerError). It is retryable: the next answer
	// may be right.
	ErrBadAnswer = errors.New("sampledb: bad answer")
)

// BadAnswerError is a 2xx answer about another job than the one asked
// about: a job object with another id, a task naming another job. The
// client retried the call before returning it.
type BadAnswerError struct {
	// Method and Path are the call (Path below Config.URL, no query).
	Method, Path string
	// Want is the job asked about (canonical); Got the job the answer is
	// about, as SampleDB sent it (scrubbed, printable, capped).
	Want, Got string
}

// Error says what was asked and what came; it never holds the API key.
func (e *BadAnswerError) Error() string {
	return fmt.Sprintf("sampledb %s %s: bad answer: asked about job %s, the answer is about job %s", e.Method, e.Path, e.Want, e.Got)
}

// Is matches ErrBadAnswer.
func (e *BadAnswerError) Is(target error) bool { return target == ErrBadAnswer }

// Retryable is true: another attempt may be answered right.
func (e *BadAnswerError) Retryable() bool { return true }

// Error is a SampleDB answer with a status that is not 2xx, after the
// client's own retries (for retryable statuses) gave up.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Method is the HTTP method; Path the API path below Config.URL
	// (e.g. /sampledb/v2/job/{id}), without query.
	Method, Path string
	// Messages are the envelope's messages (the API key scrubbed out).
	Messages []Message
	// RetryAfter is the Retry-After SampleDB sent with the last answer
	// (429/503), 0 when absent.
	RetryAfter time.Duration

	// body is a short, sanitised prefix of a body that was not an envelope,
	// shown when there are no Messages.
	body string
}

// Error describes the failure for an operator; it never holds the API key.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sampledb %s %s: HTTP %d", e.Method, e.Path, e.Status)
	if t := http.StatusText(e.Status); t != "" {
		b.WriteString(" " + t)
	}
	switch e.Status {
	case http.StatusUnauthorized:
		b.WriteString(" (API key rejected: check SAMPLEDB_API_KEY / role)")
	case http.StatusForbidden:
		b.WriteString(" (role not allowed: check SAMPLEDB_API_KEY / role; " + roleHint(e.Method, e.Path) + ")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	var texts []string
	for _, m := range e.Messages {
		if m.Message == "" {
			continue
		}
		if m.Field != "" {
			texts = append(texts, m.Field+": "+m.Message)
		} else {
			texts = append(texts, m.Message)
		}
	}
	switch {
	case len(texts) > 0:
		b.WriteString(": " + strings.Join(texts, "; "))
	case e.body != "":
		b.WriteString(": " + e.body)
	}
	return b.String()
}

// roleHint names the SampleDB role a refused call needs.
func roleHint(method, path string) string {
	switch {
	case method == http.MethodGet, method == http.MethodPost && strings.HasSuffix(path, "/search"):
		return "fetching, listing and searching jobs needs SAMPLEDB-VIEWER or higher"
	case method == http.MethodDelete:
		return "aborting jobs needs SAMPLEDB-USER or higher"
	}
	return "updating jobs and tasks (PUT/POST) needs SAMPLEDB-ANALYZER; fetching and listing (GET) SAMPLEDB-VIEWER or higher"
}

// Is matches the sentinel for the status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrPrecondition:
		return e.Status == http.StatusPreconditionFailed
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	}
	return false
}

// Retryable reports whether the same request may succeed later (5xx other
// than 501/505, 429, 408). The client has already retried such errors until
// MaxElapsed; a caller with its own retry loop (the outbox) may try again.
func (e *Error) Retryable() bool { return retryableStatus(e.Status) }

// RetryAfterHint returns RetryAfter (httpc.RetryAfterOf understands it).
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

func retryableStatus(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return true
	case status >= 500:
		// 501 and 505 say the server will never do this; everything else
		// (500, 502, 503, 504, ...) is a server or gateway having a bad time.
		return status != http.StatusNotImplemented && status != http.StatusHTTPVersionNotSupported
	}
	return false
}

// IsConfigError reports whether err says the API key or its role is wrong
// (401/403): an operator has to act, retrying does not help.
func IsConfigError(err error) bool {
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden)
}
