package state

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGrantsAreUsableFromTheirTimeForAWindow: a reservation's grants go no
// earlier than their slot, and one not used within creditWindow of its
// slot is dropped, so reserved grants never add up to a late burst.
func TestGrantsAreUsableFromTheirTimeForAWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const iv = 10 * time.Millisecond
	var g grants
	// Two usable now (the burst), then three at +10, +20, +30 ms.
	g.add(t0, reservation{first: -iv, n: 5, iv: iv})

	took, next := g.take(t0, 10)
	require.Equal(t, 2, took, "the burst's two now")
	require.Equal(t, t0.Add(iv), next)

	took, next = g.take(t0.Add(5*time.Millisecond), 10)
	require.Zero(t, took, "the next slot is not yet")
	require.Equal(t, t0.Add(iv), next)

	took, _ = g.take(t0.Add(25*time.Millisecond), 1)
	require.Equal(t, 1, took, "one asked for")
	took, next = g.take(t0.Add(25*time.Millisecond), 10)
	require.Equal(t, 1, took, "the +20 ms slot; +30 ms is not yet")
	require.Equal(t, t0.Add(3*iv), next)

	// The +30 ms slot unused until well past creditWindow: dropped.
	took, next = g.take(t0.Add(3*iv+creditWindow+time.Millisecond), 10)
	require.Zero(t, took)
	require.True(t, next.IsZero(), "nothing left")

	// Grants given back are usable for creditWindow, then dropped.
	g.giveBack(t0, 3)
	took, _ = g.take(t0.Add(creditWindow-time.Millisecond), 2)
	require.Equal(t, 2, took)
	took, next = g.take(t0.Add(creditWindow), 2)
	require.Zero(t, took)
	require.True(t, next.IsZero())
}
