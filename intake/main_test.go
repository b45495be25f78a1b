package intake

import (
	"testing"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// docHash is the sample hash of the SampleDB document's example message.
const docHash = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"
