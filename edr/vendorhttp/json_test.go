package vendorhttp_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

func TestLongestToken(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want int
	}{
		{``, 0},
		{`{}`, 0},
		{`{"a": 1}`, 1},
		{`{"abc": "de"}`, 3},
		{`[12345, true, null]`, 5},
		{`{"p": "C:\\x"}`, 5},
		{`{"q": "a\"b"}`, 4},
		{`"` + strings.Repeat("x", 1000), 1000}, // unterminated: still measured
		{strings.Repeat("9", 77), 77},
	} {
		require.Equal(t, c.want, vendorhttp.LongestToken([]byte(c.in)), c.in)
	}
}

// FuzzLongestToken compares LongestToken with what encoding/json decodes,
// on valid JSON: no string or number is longer (a decoded string has no
// more runes than its escaped form has bytes; invalid UTF-8 decodes to a
// three-byte U+FFFD, so bytes are not compared).
func FuzzLongestToken(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e10,"x\"y\\z"],"b":null}`, `"\u00e9\n"`, `[true,false]`, `{"p":"C:\\Windows"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := vendorhttp.LongestToken(b)
		require.LessOrEqual(t, n, len(b))
		if !json.Valid(b) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			switch v := tok.(type) {
			case string:
				require.LessOrEqual(t, utf8.RuneCountInString(v), n, "%q in %q", v, b)
			case json.Number:
				require.LessOrEqual(t, len(v), n, "%q in %q", v, b)
			}
		}
	})
}
