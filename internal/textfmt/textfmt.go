// Package textfmt holds the small text rules shared by what the fleet
// stores and shows: cutting text to a byte bound without splitting a
// UTF-8 sequence, and durations, times and lease deadlines for people
// (fleetctl and the console write them alike).
package textfmt

import (
	"fmt"
	"time"
	"unicode/utf8"
)

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

// Duration renders d for people, cut (not rounded): Go's form below an
// hour (850ms, 12.3s, 4m5s), then two units (3h05m, 1d, 2d04h).
func Duration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < time.Second:
		return d.Truncate(time.Millisecond).String()
	case d < time.Minute:
		return d.Truncate(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	case d < day:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	case d%day/time.Hour == 0:
		return fmt.Sprintf("%dd", d/day)
	}
	return fmt.Sprintf("%dd%02dh", d/day, d%day/time.Hour)
}

// Relative renders t against now: "in 12s", "3m4s ago"; "" for no time.
func Relative(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + Duration(d)
	}
	return Duration(now.Sub(t)) + " ago"
}

// Lease describes a lease deadline against now: "none" (no lease),
// "released" (claimable at once), "expires in 12s", "expired 3s ago".
func Lease(deadline, now time.Time) string {
	switch {
	case deadline.IsZero():
		return "none"
	case deadline.UnixMilli() == 0:
		return "released"
	case deadline.After(now):
		return "expires " + Relative(deadline, now)
	}
	return "expired " + Relative(deadline, now)
}
