package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// field is a member of a JSON object the fleet reads, with the members it
// reads of its value when that is an object.
type field struct {
	name string
	sub  []field
}

// readFields are the fields the fleet reads of a job message, at every
// level (Message and Message.Target).
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
	err := members(b, func(key []byte, start, end int) error {
		for i, f := range fields {
			if sameField(key, f.name) {
				keys[i] = append(keys[i], string(key))
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
// its key (unescaped, as encoding/json reads it) and the span [start, end)
// of its value in b. b must be valid JSON (json.Valid): this is a scanner
// for validated input, not a parser; it returns an error when b is not an
// object, and never reads past b.
func members(b []byte, fn func(key []byte, start, end int) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	if i = skipSpace(b, i+1); i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errScan
		}
		kend := skipString(b, i)
		if kend < 0 {
			return errScan
		}
		key, err := keyText(b[i:kend])
		if err != nil {
			return err
		}
		if i = skipSpace(b, kend); i >= len(b) || b[i] != ':' {
			return errScan
		}
		start := skipSpace(b, i+1)
		end := skipValue(b, start)
		if end < 0 {
			return errScan
		}
		if err := fn(key, start, end); err != nil {
			return err
		}
		switch i = skipSpace(b, end); {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return nil
		default:
			return errScan
		}
	}
}

var (
	errNotObject = errors.New("not a JSON object")
	errScan      = errors.New("not valid JSON")
)

// keyText unescapes the JSON string q (quotes included) as encoding/json
// does, invalid UTF-8 becoming U+FFFD. Most keys need no unescaping: their
// bytes are returned as they are, without a copy.
func keyText(q []byte) ([]byte, error) {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, nil
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string that starts at
// b[i] (a quote), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value that starts at b[i],
// or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				if j = skipString(b, j); j < 0 {
					return -1
				}
				j-- // the loop's j++ lands after the string
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// sameField reports whether encoding/json decodes the member key into the
// struct field named field: the same name, or the same under its case
// folding, which is bytes.EqualFold's (encoding/json/fold.go). So "JOBID"
// and "jobid" are jobID, and so is a spelling with the Kelvin sign (U+212A)
// for k or the long s (U+017F) for s.
func sameField(key []byte, field string) bool {
	return bytes.EqualFold(key, []byte(field))
}
