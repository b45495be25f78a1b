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
	"github.com/analysisfleet/analysisfleet/internal/httpc"
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
// the body was over MaxBody (permanent *edr.Error), or ctx ended.
func (d *Driver) send(ctx context.Context, op, method, path string, body any) (*httpc.Response, error) {
	req, err := d.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, edr.Wrap(vendor, op, err)
	}
	return resp, nil
}

func ok2xx(status int) bool { return status >= 200 && status < 300 }

// statusError turns a non-2xx answer into an *edr.Error: 401 is the token,
// 429 and 5xx are retryable (429 keeps its Retry-After), anything else is
// permanent and carries the vendor's own explanation. what says which call
// it was ("GET session 12").
func statusError(op, what string, resp *httpc.Response) error {
	switch {
	case resp.Status == http.StatusUnauthorized:
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: msgBadToken}
	case resp.Status == http.StatusTooManyRequests:
		se := resp.Err().(*httpc.StatusError)
		return &edr.Error{
			Vendor: vendor, Op: op, Status: resp.Status, Retryable: true,
			RetryAfter: cmp.Or(se.RetryAfter, httpc.DefaultThrottle),
			Msg:        "CB EDR is rate limiting requests (" + what + ")",
		}
	}
	if err := resp.Err(); err != nil && httpc.IsRetryable(err) {
		return edr.Wrap(vendor, op, err)
	}
	return &edr.Error{
		Vendor: vendor, Op: op, Status: resp.Status,
		Msg: fmt.Sprintf("%s: %s", what, vendorText(resp.Status, resp.Body)),
	}
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

// malformed is the permanent error for an undecodable answer; err wraps
// errMalformed, whose text says "malformed response".
func malformed(op, what string, err error) error {
	if !errors.Is(err, errMalformed) {
		err = fmt.Errorf("%w: %w", errMalformed, err)
	}
	return &edr.Error{Vendor: vendor, Op: op, Msg: what, Err: err}
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
		if e.Err != nil {
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
