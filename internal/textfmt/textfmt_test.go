package textfmt_test

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/analysisfleet/analysisfleet/internal/textfmt"
)

func TestClip(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc…"},
		{"héllo", 2, "h…"}, // é is two bytes: never split
		{"abc", 0, "…"},
	} {
		got := textfmt.Clip(c.s, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

func TestDurationRelativeAndLease(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond:            "850ms",
		12345 * time.Millisecond:          "12.3s",
		4*time.Minute + 10*time.Second:    "4m10s",
		10*time.Minute - time.Millisecond: "9m59s", // cut, not rounded up
		time.Hour:                         "1h00m",
		24 * time.Hour:                    "1d",
		7 * 24 * time.Hour:                "7d",
		52 * time.Hour:                    "2d04h",
	} {
		if got := textfmt.Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
	now := time.Unix(1_700_000_000, 0)
	for _, c := range []struct{ got, want string }{
		{textfmt.Relative(now.Add(12*time.Second), now), "in 12s"},
		{textfmt.Relative(now.Add(-3*time.Minute), now), "3m0s ago"},
		{textfmt.Relative(time.Time{}, now), ""},
		{textfmt.Lease(time.Time{}, now), "none"},
		{textfmt.Lease(time.UnixMilli(0), now), "released"},
		{textfmt.Lease(now.Add(time.Minute), now), "expires in 1m0s"},
		{textfmt.Lease(now.Add(-2*time.Second), now), "expired 2s ago"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
