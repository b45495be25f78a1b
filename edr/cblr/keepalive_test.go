package cblr

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The keepalive interval is half the shorter of sensor_wait_timeout and
// session_timeout, each when reported, and never below minKeepalive.
func TestKeepaliveEvery(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		wait, session float64
		want          time.Duration
	}{
		{0, 0, defaultWaitTimeout / 2},
		{120, 0, 60 * time.Second},
		{120, 300, 60 * time.Second},           // the document's example
		{120, 30, 15 * time.Second},            // session_timeout shorter
		{0, 30, 15 * time.Second},              // wait timeout not reported: its default
		{0, 600, defaultWaitTimeout / 2},       // default wait timeout shorter
		{0.3, 0, 150 * time.Millisecond},       // short, still above the floor
		{0.01, 0, minKeepalive},                // nonsense: the floor
		{120, 0.001, minKeepalive},             // nonsense: the floor
		{1e300, 0, time.Duration(1<<63-1) / 2}, // saturates instead of overflowing
	} {
		got := keepaliveEvery(&sensorRef{WaitTimeout: c.wait, SessionTimeout: c.session})
		require.Equal(t, c.want, got, "wait %v, session %v", c.wait, c.session)
	}

	// Both come from the session object; absorb keeps them in the Ref.
	sess, err := decodeSession([]byte(`{"id":2,"status":"active","sensor_wait_timeout":120,"session_timeout":"30"}`))
	require.NoError(t, err)
	s := &sensorRef{}
	require.True(t, s.absorb(sess))
	require.Equal(t, 120.0, s.WaitTimeout)
	require.Equal(t, 30.0, s.SessionTimeout)
	require.Equal(t, 15*time.Second, keepaliveEvery(s))
	require.False(t, s.absorb(sess), "nothing new")
}

// The tag is the document's default check-in timeout less 1 to 599 s and a
// fraction in milliseconds, the same for the same key.
func TestCheckInTag(t *testing.T) {
	t.Parallel()
	seconds, tags := map[float64]bool{}, map[float64]bool{}
	for i := range 2000 {
		key := fmt.Sprintf("job-%d/cblr.triage/3.1", i)
		tag := checkInTag(key)
		require.Equal(t, tag, checkInTag(key))
		require.LessOrEqual(t, tag, float64(baseCheckIn-1))
		require.Greater(t, tag, float64(baseCheckIn-tagRange-1))
		require.InDelta(t, tag, math.Round(tag*1000)/1000, 1e-9, "whole milliseconds")
		seconds[math.Floor(tag)] = true
		tags[tag] = true
	}
	require.Greater(t, len(seconds), tagRange*9/10, "tags spread over the range")
	require.Greater(t, len(tags), 1990, "and rarely collide")

	tag := checkInTag("job-1/cblr.triage/3.1")
	require.True(t, tagged(tag, tag))
	require.True(t, tagged(tag+0.0001, tag), "a float that went through a duration")
	require.True(t, tagged(math.Floor(tag), tag), "a server that keeps whole seconds")
	require.True(t, tagged(math.Round(tag), tag))
	require.False(t, tagged(baseCheckIn, tag), "the default: nothing asked, or ignored")
	require.False(t, tagged(tag+0.002, tag))
	require.False(t, tagged(0, 0))
}
