package cblr

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

const (
	vendor      = "cblr"
	sessionBase = "/api/v1/cblr/session"

	msgBadToken = "CB EDR rejected the API token (check CBLR_API_TOKEN)"
)

func sessionPath(id flexID) string { return sessionBase + "/" + url.PathEscape(string(id)) }

func commandPath(sid, cid flexID) string {
	return sessionPath(sid) + "/command/" + url.PathEscape(string(cid))
}

func filePath(sid, fid flexID) string {
	return sessionPath(sid) + "/file/" + url.PathEscape(string(fid))
}

// newRequest builds an authenticated request. body, when non-nil, is sent
// as JSON.
func (d *Driver) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("cblr: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("cblr: build request: %w", err)
	}
	req.Header.Set("X-Auth-Token", d.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// send performs one request and returns the response whatever its status.
// The error is non-nil only when no response arrived (retryable *edr.Error),
// the body was over MaxBody (permanent *edr.Error), or ctx ended. Answers
// the caller does not expect are mapped with d.answers.
func (d *Driver) send(ctx context.Context, op, method, path string, body any) (*httpc.Response, error) {
	req, err := d.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, d.answers.NoAnswer(ctx, op, err)
	}
	return resp, nil
}

func ok2xx(status int) bool { return status >= 200 && status < 300 }

// decodeAnswer reads the 2xx answer to the call named what with decode:
// another status is mapped by d.answers, an answer holding a JSON value over
// MaxToken is refused (checkTokens), and a body decode cannot read is
// malformed.
func decodeAnswer[T any](d *Driver, op, what string, resp *httpc.Response, decode func([]byte) (T, error)) (T, error) {
	var zero T
	if !ok2xx(resp.Status) {
		return zero, d.answers.Error(vendorhttp.Call{Op: op, What: what}, resp)
	}
	if err := d.checkTokens(op, what, resp.Body); err != nil {
		return zero, err
	}
	v, err := decode(resp.Body)
	if err != nil {
		return zero, d.answers.Malformed(vendorhttp.Call{Op: op, What: what}, resp.Status, err)
	}
	return v, nil
}

// newAPI returns the mapper of CB EDR's answers: vendorhttp's table, the
// token hint for 401, and the server's own words (vendorText) after the
// call's name for the rest ("GET session 12: Session not found").
func newAPI(red *redact.Set) *vendorhttp.API {
	return &vendorhttp.API{
		Vendor: vendor,
		Texts: map[vendorhttp.Class]string{
			vendorhttp.Credentials: msgBadToken, vendorhttp.Throttled: "CB EDR is rate limiting requests",
			vendorhttp.Unexpected: "", vendorhttp.Redirect: "", vendorhttp.BadRequest: "", vendorhttp.Forbidden: "",
			vendorhttp.NotFound: "", vendorhttp.Refused: "", vendorhttp.Unavailable: "",
		},
		Describe: func(status int, body []byte) vendorhttp.Detail {
			return vendorhttp.Detail{Msg: vendorText(status, body)}
		},
		Redact: red,
	}
}

// vendorText is vendorText of body with the driver's secrets masked.
func (d *Driver) vendorText(status int, body []byte) string {
	return vendorText(status, []byte(d.redact.Snippet(string(body))))
}

// vendorText extracts the server's explanation from an error body: the
// usual JSON message fields, else a short sanitised prefix of the body, else
// the status text.
func vendorText(status int, body []byte) string {
	var m map[string]any
	if json.Unmarshal(body, &m) == nil {
		for _, k := range []string{"error", "message", "reason", "detail", "result_desc", "description"} {
			if s, ok := m[k].(string); ok && strings.TrimSpace(s) != "" {
				return clip(s)
			}
		}
	}
	if s := clip(string(body)); s != "" && !strings.HasPrefix(s, "<") {
		return s
	}
	return http.StatusText(status)
}

// clip makes vendor text safe for one log line: no control characters, at
// most 200 runes.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}

// taskLevel reports whether err concerns the whole task rather than one
// sensor: the caller's context ended, the token was rejected, or the same
// call should simply be retried. Everything else fails only the sensor.
func taskLevel(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var e *edr.Error
	if errors.As(err, &e) {
		return e.Retryable || e.Status == http.StatusUnauthorized
	}
	return true
}

// reason renders a sensor-level error for Failure, and its HTTP status.
func reason(err error) (int, string) {
	var e *edr.Error
	if errors.As(err, &e) {
		msg := e.Msg
		var se *httpc.StatusError
		if e.Err != nil && !errors.As(e.Err, &se) { // the message says what the server said
			if msg != "" {
				msg += ": "
			}
			msg += e.Err.Error()
		}
		return e.Status, cmp.Or(msg, e.Error())
	}
	return 0, err.Error()
}

// gone reports statuses meaning "that session (or command, or file) is not
// there any more": the real server answers 404 for a session that timed
// out, and other servers use 400/409/410 for ended sessions.
func gone(status int) bool {
	switch status {
	case http.StatusNotFound, http.StatusGone, http.StatusConflict, http.StatusBadRequest:
		return true
	}
	return false
}
