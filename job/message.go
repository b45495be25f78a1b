package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
)

// Message is the job-creation message SampleDB posts to
// Sample.Analysis.Job.{OSL,SVG}.
//
// Decoding is strict only where the fleet reads a field: jobID, the
// submission's customer, sample.id, name and metaData, and the
// classification's sample, type and platform must have their documented
// types. Every other field is informative: a value of another type than the
// document shows (an object where it shows null, a number where it shows a
// string) leaves the Go field zero and never fails the message.
type Message struct {
	JobID          string         `json:"jobID"`
	Submission     Submission     `json:"submission"`
	Classification Classification `json:"classification"`
}

// Submission is the submission a job was created from. The fleet reads
// Customer, Sample, Name and MetaData (CB EDR sensors, the on-host path);
// the rest is carried along.
type Submission struct {
	ID               string          `json:"id"`
	Customer         string          `json:"customer"`
	Sample           Sample          `json:"sample"`
	CreatedByUser    *User           `json:"createdByUser,omitempty"`
	CreatedTimestamp int64           `json:"createdTimestamp"`
	Name             string          `json:"name"`
	Timestamp        int64           `json:"timestamp"`
	MimeType         string          `json:"mimeType"`
	MetaData         map[string]any  `json:"metaData,omitempty"`
	TLP              string          `json:"tlp"`
	ACL              json.RawMessage `json:"acl,omitempty"`
	UserAgent        *UserAgent      `json:"userAgent,omitempty"`
}

// UnmarshalJSON decodes a submission: the fields the fleet reads strictly
// (a wrong type is a *json.UnmarshalTypeError, after every other field was
// decoded), the others leniently. Numbers in metaData are json.Number, so
// sensor IDs keep every digit whatever decoder the caller uses.
func (s *Submission) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	if !isObject(b) {
		return typeError(b, reflect.TypeFor[Submission]())
	}
	var used struct {
		Customer string         `json:"customer"`
		Sample   Sample         `json:"sample"`
		Name     string         `json:"name"`
		MetaData map[string]any `json:"metaData"`
	}
	strict := decodeNumbers(b, &used)
	type plain Submission // without this method
	var p plain
	if err := looseObject(b, &p); err != nil {
		return err
	}
	*s = Submission(p)
	s.Customer, s.Sample, s.Name, s.MetaData = used.Customer, used.Sample, used.Name, used.MetaData
	return strict
}

// Sample identifies the submitted sample; ID is its SHA-256.
type Sample struct {
	ID string `json:"id"`
}

// User is the submitting user. The fleet never reads it: any field may
// arrive in another shape (the document shows customer and domain as null;
// producers may send objects, kept verbatim in Customer and Domain).
type User struct {
	ID        int64           `json:"id"`
	ShortName string          `json:"shortName"`
	Name      string          `json:"name"`
	Customer  json.RawMessage `json:"customer"`
	Domain    json.RawMessage `json:"domain"`
}

// UnmarshalJSON decodes a user leniently: it never fails.
func (u *User) UnmarshalJSON(b []byte) error {
	type plain User
	var p plain
	if looseObject(b, &p) == nil {
		*u = User(p)
	}
	return nil
}

// UserAgent is the submitting client. The fleet never reads it.
type UserAgent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// UnmarshalJSON decodes a user agent leniently: it never fails.
func (a *UserAgent) UnmarshalJSON(b []byte) error {
	type plain UserAgent
	var p plain
	if looseObject(b, &p) == nil {
		*a = UserAgent(p)
	}
	return nil
}

// Classification is the sample classification; the playbook plans tasks
// from Platform and Type, and the consumer checks Sample against the
// submission's hash. The rest is carried along.
type Classification struct {
	Sample           string          `json:"sample"`
	ClassificationID string          `json:"classificationID"`
	CreatedTimestamp int64           `json:"createdTimestamp"`
	Version          string          `json:"version"`
	Type             string          `json:"type"`
	SuperType        string          `json:"superType"`
	Arch             string          `json:"arch"`
	Platform         string          `json:"platform"`
	Meta             json.RawMessage `json:"meta,omitempty"`
}

// UnmarshalJSON decodes a classification: sample, type and platform
// strictly, the others leniently (see Submission.UnmarshalJSON).
func (c *Classification) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	if !isObject(b) {
		return typeError(b, reflect.TypeFor[Classification]())
	}
	var used struct {
		Sample   string `json:"sample"`
		Type     string `json:"type"`
		Platform string `json:"platform"`
	}
	strict := json.Unmarshal(b, &used)
	type plain Classification
	var p plain
	if err := looseObject(b, &p); err != nil {
		return err
	}
	*c = Classification(p)
	c.Sample, c.Type, c.Platform = used.Sample, used.Type, used.Platform
	return strict
}

func isObject(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

// looseObject unmarshals the JSON object b into v, leaving fields of
// another type than v declares zero (encoding/json goes on past them). A
// value that is not an object leaves v zero.
func looseObject(b []byte, v any) error {
	if !isObject(b) {
		return nil
	}
	err := json.Unmarshal(b, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return nil
	}
	return err
}

// decodeNumbers unmarshals b into v with numbers in interfaces kept as
// json.Number.
func decodeNumbers(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// typeError is the *json.UnmarshalTypeError for the JSON value b where a
// t belongs (the kind only: never the value's text).
func typeError(b []byte, t reflect.Type) error {
	kind := "value"
	if tb := bytes.TrimSpace(b); len(tb) > 0 {
		switch tb[0] {
		case '"':
			kind = "string"
		case '[':
			kind = "array"
		case '{':
			kind = "object"
		case 't', 'f':
			kind = "bool"
		default:
			kind = "number"
		}
	}
	return &json.UnmarshalTypeError{Value: kind, Type: t}
}
