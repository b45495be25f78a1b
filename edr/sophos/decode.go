package sophos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Decoders of Sophos response bodies. Each one is strict about what the
// guide makes explicit (field names, JSON types of the fields we use) and
// tolerant of the rest: unknown fields are ignored, IDs may be numbers or
// strings, optional fields may be absent or null. They are fuzzed.

// errMalformed marks a body that cannot be understood.
var errMalformed = errors.New("malformed response")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
}

// Bounds on what a token response may claim.
const (
	// defaultTokenTTL is assumed when expires_in is absent or not positive.
	// Sophos documents 3600 s; assuming less only costs an earlier refresh.
	defaultTokenTTL = 15 * time.Minute
	maxTokenTTL     = 24 * time.Hour
	maxTokenLen     = 16 << 10
	maxIDLen        = 256
)

// token is a decoded client-credentials grant response.
type token struct {
	access string
	ttl    time.Duration
}

// decodeToken decodes {"access_token","token_type":"bearer","expires_in",...}.
func decodeToken(body []byte) (token, error) {
	var raw struct {
		AccessToken *string         `json:"access_token"`
		TokenType   *string         `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return token{}, err
	}
	if raw.AccessToken == nil || *raw.AccessToken == "" {
		return token{}, malformed("no access_token")
	}
	tok := *raw.AccessToken
	if len(tok) > maxTokenLen || strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		// It goes into an Authorization header: printable ASCII only.
		return token{}, malformed("access_token is not a printable token")
	}
	if raw.TokenType != nil && *raw.TokenType != "" && !strings.EqualFold(*raw.TokenType, "bearer") {
		return token{}, malformed("token_type %q is not bearer", truncate(*raw.TokenType, 20))
	}
	ttl := defaultTokenTTL
	if secs, ok, err := number(raw.ExpiresIn); err != nil {
		return token{}, malformed("expires_in: %v", err)
	} else if ok && secs > 0 {
		ttl = time.Duration(math.Min(secs, maxTokenTTL.Seconds()) * float64(time.Second))
	}
	return token{access: tok, ttl: ttl}, nil
}

// runState is a decoded query run: the body of the start, status and
// cancel responses.
type runState struct {
	ID         string
	Status     string
	Result     string
	CreatedAt  string
	ExpiresAt  string
	FinishedAt string
}

// decodeRun decodes {"id","createdAt","expiresAt","finishedAt","result",
// "status"}. It requires at least one of status and result; the caller
// checks the ID where it needs one.
func decodeRun(body []byte) (runState, error) {
	var raw struct {
		ID         json.RawMessage `json:"id"`
		Status     *string         `json:"status"`
		Result     *string         `json:"result"`
		CreatedAt  json.RawMessage `json:"createdAt"`
		ExpiresAt  json.RawMessage `json:"expiresAt"`
		FinishedAt json.RawMessage `json:"finishedAt"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return runState{}, err
	}
	var out runState
	var err error
	if out.ID, err = flexString(raw.ID); err != nil {
		return runState{}, malformed("id: %v", err)
	}
	if out.ID != "" && !validID(out.ID) {
		return runState{}, malformed("id is not a usable run ID")
	}
	if raw.Status != nil {
		out.Status = *raw.Status
	}
	if raw.Result != nil {
		out.Result = *raw.Result
	}
	if out.Status == "" && out.Result == "" {
		return runState{}, malformed("run has neither status nor result")
	}
	// Timestamps are informational: keep them when they are strings.
	out.CreatedAt, _ = flexString(raw.CreatedAt)
	out.ExpiresAt, _ = flexString(raw.ExpiresAt)
	out.FinishedAt, _ = flexString(raw.FinishedAt)
	return out, nil
}

// validID accepts run IDs that are safe to put in a path segment (after
// escaping) and to log.
func validID(id string) bool {
	if len(id) > maxIDLen || id == "." || id == ".." {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || r == '/' || r == '\\' }) < 0
}

// resultsPage is a decoded page of results.
type resultsPage struct {
	Hosts   []string // one entry per row: meta_hostname, else endpoint_id, else ""
	NextKey string
}

// decodeResults decodes {"items":[{...}],"metadata":{...},"pages":
// {"nextKey","size","maxSize"}}. items must be present (null counts as
// empty) and hold one object per row; pages and nextKey are optional (no
// key = last page).
func decodeResults(body []byte) (resultsPage, error) {
	var raw struct {
		Items json.RawMessage `json:"items"`
		Pages *struct {
			NextKey json.RawMessage `json:"nextKey"`
		} `json:"pages"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return resultsPage{}, err
	}
	if raw.Items == nil {
		return resultsPage{}, malformed("no items")
	}
	var items []*struct {
		Hostname   json.RawMessage `json:"meta_hostname"`
		EndpointID json.RawMessage `json:"endpoint_id"`
	}
	if err := json.Unmarshal(raw.Items, &items); err != nil {
		return resultsPage{}, malformed("items is not a list of rows")
	}
	out := resultsPage{Hosts: make([]string, len(items))}
	for i, it := range items {
		if it == nil {
			continue // a null row still counts as a row
		}
		h, _ := flexString(it.Hostname)
		if h == "" {
			h, _ = flexString(it.EndpointID)
		}
		out.Hosts[i] = truncate(strings.TrimSpace(h), 255)
	}
	if raw.Pages != nil {
		key, err := flexString(raw.Pages.NextKey)
		if err != nil {
			return resultsPage{}, malformed("pages.nextKey: %v", err)
		}
		out.NextKey = key
	}
	return out, nil
}

// unmarshalObject decodes a JSON object into v; anything else is malformed.
func unmarshalObject(body []byte, v any) error {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return malformed("body is not a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return malformed("field %q has the wrong type", te.Field)
		}
		return malformed("invalid JSON")
	}
	return nil
}

// flexString reads a JSON string or number as a string; absent or null is
// "". Other types are an error.
func flexString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("invalid string")
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", errors.New("invalid number")
		}
		return n.String(), nil
	}
	return "", errors.New("neither a string nor a number")
}

// number reads a JSON number, or a string holding one. ok is false when the
// value is absent or null.
func number(raw json.RawMessage) (v float64, ok bool, err error) {
	s, err := flexString(raw)
	if err != nil || s == "" {
		return 0, false, err
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, errors.New("not a number")
	}
	return f, true, nil
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
