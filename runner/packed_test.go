package runner

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// A packed message reads back as it was, whatever its bytes, and a bench
// job's is about half its size.
func TestPackedMessageRoundTrip(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	msg, err := json.Marshal(benchJob(rng))
	require.NoError(t, err)
	random := make([]byte, 5000)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	for _, b := range [][]byte{msg, nil, []byte("{}"), random, bytes.Repeat(msg, 50)} {
		p := pack(b)
		got, err := p.unpack()
		require.NoError(t, err)
		require.Equal(t, len(b), len(got))
		require.True(t, bytes.Equal(b, got))
		again, err := p.unpack() // a pooled reader starts afresh
		require.NoError(t, err)
		require.True(t, bytes.Equal(b, again))
	}
	require.Less(t, len(pack(msg)), len(msg)*2/3, "%d bytes packed from %d", len(pack(msg)), len(msg))
	_, err = packed("not deflate").unpack()
	require.Error(t, err)
}
