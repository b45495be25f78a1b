package cblr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// errMalformed marks a vendor answer that could not be decoded. It is
// permanent: asking again returns the same body.
var errMalformed = vendorhttp.ErrMalformed

// The decoders below are the only code that reads vendor JSON. They are
// deliberately tolerant: IDs may be numbers or strings, numbers may be
// quoted, unknown fields are ignored, and only the fields the driver uses are
// decoded (so an odd type in an unused field never fails a hunt).

// session is the part of a cblr_sensor session object the driver uses.
type session struct {
	ID       flexID `json:"id"`
	SensorID flexID `json:"sensor_id"`
	Status   string `json:"status"`
	// SupportedCommands is nil when the field is absent or null (not
	// reported), and non-nil (possibly empty) when the sensor reported it.
	SupportedCommands *[]string `json:"supported_commands"`
	Hostname          string    `json:"hostname"`
	SensorWaitTimeout flexNum   `json:"sensor_wait_timeout"`
	SessionTimeout    flexNum   `json:"session_timeout"`
	// CreateTime is the server's clock, unix seconds with a fraction
	// (1517942461.155622 in the recorded answers); 0 when absent.
	CreateTime flexNum `json:"create_time"`
	// CheckInTimeout carries the tag of the intent a session was opened
	// under (see checkInTag).
	CheckInTimeout flexNum `json:"check_in_timeout"`
}

// command is the part of a command object the driver uses.
type command struct {
	ID         flexID    `json:"id"`
	Status     string    `json:"status"`
	Name       string    `json:"name"`
	Object     flexText  `json:"object"`
	ResultCode flexText  `json:"result_code"`
	ResultType string    `json:"result_type"`
	ResultDesc string    `json:"result_desc"`
	FileID     flexID    `json:"file_id"`
	Processes  []process `json:"processes"`
	CreateTime flexNum   `json:"create_time"`
}

// process is one entry of a "process list" result. sha256 is not in the
// document; some servers add hashes, and a match on it is the strongest.
type process struct {
	PID         flexNum `json:"pid"`
	Path        string  `json:"path"`
	CommandLine string  `json:"command_line"`
	Username    string  `json:"username"`
	SHA256      string  `json:"sha256"`
}

// fileObject is a session file-store entry.
type fileObject struct {
	ID           flexID   `json:"id"`
	FileName     string   `json:"file_name"`
	Size         flexNum  `json:"size"`
	SizeUploaded *flexNum `json:"size_uploaded"`
	Status       flexText `json:"status"`
}

// decodeSession decodes a session object.
func decodeSession(b []byte) (session, error) {
	var s session
	err := decodeObject(b, &s)
	return s, err
}

// decodeCommand decodes a command object.
func decodeCommand(b []byte) (command, error) {
	var c command
	err := decodeObject(b, &c)
	return c, err
}

// decodeFile decodes a file object.
func decodeFile(b []byte) (fileObject, error) {
	var f fileObject
	err := decodeObject(b, &f)
	return f, err
}

// decodeCommandList decodes the answer to GET …/command: a JSON array of
// command objects.
func decodeCommandList(b []byte) ([]command, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("%w: expected a JSON array of commands", errMalformed)
	}
	var out []command
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return out, nil
}

// decodeSessionList decodes the answer to GET /session: a JSON array of
// session objects (what cbapi reads; the recorded answer is one). The list
// holds every sensor's sessions: an entry this driver cannot read is
// skipped rather than spoil the others.
func decodeSessionList(b []byte) ([]session, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("%w: expected a JSON array of sessions", errMalformed)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	out := make([]session, 0, len(raw))
	for _, r := range raw {
		if s, err := decodeSession(r); err == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

func decodeObject(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: expected a JSON object", errMalformed)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// flexID is an identifier sent as a JSON number or string. It is kept as
// text and must be safe to put in a URL path segment.
type flexID string

var idRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

func (f *flexID) UnmarshalJSON(b []byte) error {
	t, err := scalarText(b)
	if err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if t.num {
		// 2 and 2.0 are the same id.
		if v, err := strconv.ParseFloat(t.s, 64); err == nil && v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			t.s = strconv.FormatInt(int64(v), 10)
		}
	}
	if t.s != "" && (!idRe.MatchString(t.s) || t.s == "." || t.s == "..") {
		return fmt.Errorf("id %.40q is not a plain identifier", t.s)
	}
	*f = flexID(t.s)
	return nil
}

// jsonValue returns the id as it should be sent in a request body: a JSON
// number when it is one, else a string.
func (f flexID) jsonValue() any {
	if n, err := strconv.ParseInt(string(f), 10, 64); err == nil {
		return n
	}
	return string(f)
}

// flexNum is a number sent as a JSON number or a numeric string; null and
// "" are 0.
type flexNum float64

func (f *flexNum) UnmarshalJSON(b []byte) error {
	t, err := scalarText(b)
	if err != nil {
		return err
	}
	if t.s == "" {
		*f = 0
		return nil
	}
	v, err := strconv.ParseFloat(t.s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%.40q is not a number", t.s)
	}
	*f = flexNum(v)
	return nil
}

// flexText is any scalar (string, number, boolean, null) kept as text; an
// object or array is kept as its compact JSON.
type flexText string

func (f *flexText) UnmarshalJSON(b []byte) error {
	t, err := scalarText(b)
	if err == nil {
		*f = flexText(t.s)
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return err
	}
	*f = flexText(buf.String())
	return nil
}

type scalar struct {
	s   string
	num bool
}

func scalarText(b []byte) (scalar, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return scalar{}, errors.New("empty value")
	case string(b) == "null":
		return scalar{}, nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return scalar{}, err
		}
		return scalar{s: strings.TrimSpace(s)}, nil
	case string(b) == "true" || string(b) == "false":
		return scalar{s: string(b)}, nil
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return scalar{}, err
		}
		return scalar{s: n.String(), num: true}, nil
	}
	return scalar{}, fmt.Errorf("expected a string or number, got %.20s", b)
}
