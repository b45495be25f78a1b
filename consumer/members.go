package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// field is a member of a JSON object the fleet reads, with the members it
// reads of its value when that is an object.
type field struct {
	name string
	sub  []field
}

// readFields are the fields the fleet reads of a job message, at every
// level (sampledb.JobMessage and worker.TargetOf).
var readFields = []field{
	{name: "jobID"},
	{name: "submission", sub: []field{
		{name: "customer"},
		{name: "sample", sub: []field{{name: "id"}}},
		{name: "name"},
		{name: "metaData", sub: []field{{name: "sensorId"}, {name: "sensorIds"}, {name: "path"}, {name: "filePath"}}},
	}},
	{name: "classification", sub: []field{{name: "sample"}, {name: "type"}, {name: "platform"}}},
}

// ambiguity returns a *BadRecord when one of fields appears more than once
// in the JSON object b (under any spelling encoding/json takes for it),
// here or in the objects of the fields below; path names b's place. b must
// be valid JSON; a value that is not an object has no fields to repeat.
func ambiguity(b []byte, path string, fields []field) *BadRecord {
	type value struct{ start, end int }
	keys := make([][]string, len(fields)) // the keys that matched each field
	values := make([]value, len(fields))  // the value of each field
	err := members(b, func(key string, start, end int) error {
		for i, f := range fields {
			if sameField(key, f.name) {
				keys[i] = append(keys[i], key)
				values[i] = value{start, end}
			}
		}
		return nil
	})
	if err != nil {
		return nil
	}
	for i, f := range fields {
		if n := len(keys[i]); n > 1 {
			return &BadRecord{ReasonAmbiguousField, fmt.Sprintf("field %s appears %d times (as %s): which one counts is ambiguous",
				path+f.name, n, spellings(keys[i]))}
		}
	}
	for i, f := range fields {
		if f.sub == nil || keys[i] == nil {
			continue
		}
		if bad := ambiguity(b[values[i].start:values[i].end], path+f.name+".", f.sub); bad != nil {
			return bad
		}
	}
	return nil
}

// spellings lists the distinct keys, quoted, at most three.
func spellings(keys []string) string {
	var out []string
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		if len(out) == 3 {
			out = append(out, "…")
			break
		}
		seen[k] = true
		out = append(out, strconv.Quote(k))
	}
	return strings.Join(out, ", ")
}

// members calls fn for every member of the JSON object b, in order, with
// its key (unescaped) and the span [start, end) of its value in b. b must
// be valid JSON; it returns an error when it is not an object.
func members(b []byte, fn func(key string, start, end int) error) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		end := int(dec.InputOffset())
		if err := fn(key, end-len(raw), end); err != nil {
			return err
		}
	}
	return nil
}

// sameField reports whether encoding/json decodes the member key into the
// struct field named field: the same name, or the same under its case
// folding (foldName: every rune mapped to the smallest rune of its simple
// case-folding orbit). So "JOBID" and "jobid" are jobID, and so is a
// spelling with the Kelvin sign (U+212A) for k or the long s (U+017F) for s.
func sameField(key, field string) bool {
	return key == field || foldName(key) == foldName(field)
}

// foldName is encoding/json's key folding (encoding/json/fold.go).
func foldName(s string) string {
	var b []byte
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		b = utf8.AppendRune(b, foldRune(r))
		i += n
	}
	return string(b)
}

// foldRune returns the smallest rune of r's simple case-folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
