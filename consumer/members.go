package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode"
	"unicode/utf8"
)

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
