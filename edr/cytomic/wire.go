package cytomic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// This file holds the wire shapes of the Cytomic API and their decoders. The
// decoders take untrusted bytes: they are tolerant where the source document
// is loose (IDs and codes as numbers or strings, unknown fields, status case)
// and strict where it is explicit (a list of objects, each with its
// operationId). Every decoder is fuzzed.

// errMalformed is wrapped by every decoding failure.
var errMalformed = vendorhttp.ErrMalformed

// opID is an identifier the API may send as a JSON string or a JSON number.
// It re-encodes the way it arrived, so an ID is always sent back to Cytomic
// in the type Cytomic chose.
type opID struct {
	text string
	num  bool
}

func (i opID) String() string { return i.text }

// UnmarshalJSON accepts a string, a number or null.
func (i *opID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*i = opID{}
		return nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*i = opID{text: strings.TrimSpace(s)}
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("identifier is neither a string nor a number")
	}
	*i = opID{text: n.String(), num: true}
	return nil
}

// MarshalJSON writes the ID in the type it arrived in.
func (i opID) MarshalJSON() ([]byte, error) {
	if i.num {
		if _, err := strconv.ParseFloat(i.text, 64); err == nil {
			return []byte(i.text), nil
		}
	}
	return json.Marshal(i.text)
}

// flexInt is a count the API may send as a number or a numeric string.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(bytes.TrimSpace(b), `"`)
	if len(b) == 0 || string(b) == "null" {
		*n = 0
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < 0 || f > 1e12 {
		return fmt.Errorf("count %q is not a non-negative number", b)
	}
	*n = flexInt(f)
	return nil
}

// flexString is text the API may send as a string, a number or null
// (error codes: 202 or "202").
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	var id opID
	if err := id.UnmarshalJSON(b); err != nil {
		return err
	}
	*s = flexString(id.text)
	return nil
}

// --- token ---

type tokenResponse struct {
	AccessToken string     `json:"access_token"`
	TokenType   string     `json:"token_type"`
	ExpiresIn   flexInt    `json:"expires_in"`
	Error       flexString `json:"error"`
}

// decodeToken decodes the OAuth2 token response. A missing access_token is
// malformed; expires_in may be absent (0: the token is used until rejected).
func decodeToken(b []byte) (tokenResponse, error) {
	var t tokenResponse
	if err := json.Unmarshal(b, &t); err != nil {
		return tokenResponse{}, fmt.Errorf("%w: token response: %s", errMalformed, jsonProblem(err))
	}
	if strings.TrimSpace(t.AccessToken) == "" {
		return tokenResponse{}, fmt.Errorf("%w: token response has no access_token", errMalformed)
	}
	if tt := strings.TrimSpace(t.TokenType); tt != "" && !strings.EqualFold(tt, "bearer") {
		return tokenResponse{}, fmt.Errorf("%w: token_type %q is not bearer", errMalformed, clip(tt, 20))
	}
	return t, nil
}

// --- start ---

// startOp is one element of the start response: the operation for one client.
type startOp struct {
	PandaID     opID   `json:"pandaID"`
	OperationID opID   `json:"operationId"`
	MUIDs       []opID `json:"MUIDs"`
}

// decodeStart decodes the /osQuery/client (or /machine) response: a list of
// operations, one per client. A lone object is accepted as a list of one.
func decodeStart(b []byte) ([]startOp, error) {
	var ops []startOp
	if err := decodeList(b, &ops); err != nil {
		return nil, fmt.Errorf("%w: start response: %s", errMalformed, err)
	}
	for i, op := range ops {
		if op.OperationID.text == "" {
			return nil, fmt.Errorf("%w: start response: entry %d has no operationId", errMalformed, i)
		}
	}
	return ops, nil
}

// --- info ---

// machineStatus is a machine's status in /info, normalised.
type machineStatus int

const (
	machinePending machineStatus = iota
	machineSuccess
	machinePartial
	machineError
)

// parseStatus compares case-insensitively and ignores separators
// ("PartiallySucceeded", "partially_succeeded"). Anything unknown is still
// running, so it never ends an operation early (the TTL bounds the wait).
func parseStatus(s string) machineStatus {
	norm := strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToLower(s))
	switch norm {
	case "success", "succeeded", "finished", "completed":
		return machineSuccess
	case "partiallysucceeded", "partialsuccess", "partiallysuccess", "partial":
		return machinePartial
	case "error", "failed", "failure":
		return machineError
	}
	return machinePending
}

// machineInfo is one machine in an /info entry.
type machineInfo struct {
	MUID             opID       `json:"MUID"`
	Status           flexString `json:"status"`
	ErrorCode        flexString `json:"errorCode"`
	ErrorDescription flexString `json:"errorDescription"`
}

// infoOp is one operation in the /info answer.
type infoOp struct {
	Panda       opID          `json:"panda"`
	PandaID     opID          `json:"pandaID"`
	OperationID opID          `json:"operationId"`
	Info        []machineInfo `json:"info"`
}

// decodeInfo decodes the /osQuery/info answer into a map by operation ID.
func decodeInfo(b []byte) (map[string]infoOp, error) {
	var ops []infoOp
	if err := decodeList(b, &ops); err != nil {
		return nil, fmt.Errorf("%w: /info response: %s", errMalformed, err)
	}
	out := make(map[string]infoOp, len(ops))
	for i, op := range ops {
		if op.OperationID.text == "" {
			return nil, fmt.Errorf("%w: /info response: entry %d has no operationId", errMalformed, i)
		}
		out[op.OperationID.text] = op
	}
	return out, nil
}

// --- state ---

// counters are an operation's statistics in /state.
type counters struct {
	Total   flexInt `json:"totalOperationElements"`
	Success flexInt `json:"totalSuccess"`
	Partial flexInt `json:"totalPartiallySucceeded"`
	Error   flexInt `json:"totalError"`
}

func (c counters) answered() int64 { return int64(c.Success + c.Partial + c.Error) }

// stateOp is one operation in the /state answer.
type stateOp struct {
	Panda       opID     `json:"panda"`
	PandaID     opID     `json:"pandaID"`
	OperationID opID     `json:"operationId"`
	URL         string   `json:"url"`
	Counters    counters `json:"counters"`
}

// decodeState decodes the /osQuery/state answer into a map by operation ID.
func decodeState(b []byte) (map[string]stateOp, error) {
	var ops []stateOp
	if err := decodeList(b, &ops); err != nil {
		return nil, fmt.Errorf("%w: /state response: %s", errMalformed, err)
	}
	out := make(map[string]stateOp, len(ops))
	for i, op := range ops {
		if op.OperationID.text == "" {
			return nil, fmt.Errorf("%w: /state response: entry %d has no operationId", errMalformed, i)
		}
		op.URL = strings.TrimSpace(op.URL)
		out[op.OperationID.text] = op
	}
	return out, nil
}

// decodeList decodes a JSON list of objects into out (a pointer to a slice).
// A single object is accepted as a list of one; null and an empty body (the
// public client accepts 204 No Content from every call) as an empty list.
func decodeList[T any](b []byte, out *[]T) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		*out = nil
		return nil
	}
	if b[0] == '{' {
		var one T
		if err := json.Unmarshal(b, &one); err != nil {
			return errors.New(jsonProblem(err))
		}
		*out = []T{one}
		return nil
	}
	if b[0] != '[' {
		if bytes.Equal(b, []byte("null")) {
			*out = nil
			return nil
		}
		return errors.New("expected a JSON list")
	}
	if err := json.Unmarshal(b, out); err != nil {
		return errors.New(jsonProblem(err))
	}
	return nil
}

// errTokenTooLong is wrapped by checkTokens' failures.
var errTokenTooLong = errors.New("JSON token too long")

// checkTokens fails when a JSON string, number or literal in b is longer
// than max bytes (as written, escapes included; vendorhttp.LongestToken).
// The body is already capped (httpc's MaxBody), but a single string of
// megabytes would otherwise be kept.
func checkTokens(b []byte, max int) error {
	if vendorhttp.LongestToken(b) > max {
		return fmt.Errorf("%w: the answer has a JSON string or number longer than %d bytes (Config.MaxToken)", errTokenTooLong, max)
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the body (which
// may be large or hold anything).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type (%s)", te.Field, te.Value)
	}
	return "invalid JSON"
}

// clip returns s without control characters, at most n runes long: vendor
// text made safe for an error message.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > n {
		s = string([]rune(s)[:n]) + "…"
	}
	return s
}
