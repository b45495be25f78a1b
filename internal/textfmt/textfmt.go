// Package textfmt holds the small text rules shared by what the fleet
// stores and shows: cutting text to a byte bound without splitting a
// UTF-8 sequence.
package textfmt

import "unicode/utf8"

// Clip cuts s to at most n bytes at a rune boundary and marks the cut with
// "…" (so the result may be up to len("…") bytes longer than n). s is
// returned as is when it fits.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
