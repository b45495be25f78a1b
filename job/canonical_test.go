package job

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecodeCanonicalisesJobID: a UUID is the same job whatever its case;
// Decode returns it lower-case, and the value the ledger keeps names it so
// too, every other byte as it came.
func TestDecodeCanonicalisesJobID(t *testing.T) {
	t.Parallel()
	const lower = "abcdef01-abcd-abcd-abcd-abcdef012345"
	for _, c := range []struct{ name, raw string }{
		{"upper case", `"ABCDEF01-ABCD-ABCD-ABCD-ABCDEF012345"`},
		{"mixed case", `"abcdef01-ABCD-abcd-ABCD-abcdef012345"`},
		{"escaped", `"\u0041BCDEF01-abcd-abcd-abcd-abcdef012345"`},
		{"already canonical", `"` + lower + `"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			value := " {\"submission\":{\"sample\":{\"id\":\"" + docHash + "\"}}, \"jobID\" : " + c.raw + " ,\"x\":[1, 2]}\n"
			msg, err := Decode([]byte(value), 0)
			require.NoError(t, err)
			require.Equal(t, lower, msg.JobID)
			_, stored, err := DecodeRecord([]byte(value), 0)
			require.NoError(t, err)
			require.Equal(t, strings.TrimSpace(strings.Replace(value, c.raw, `"`+lower+`"`, 1)), string(stored))
			var back struct {
				JobID string `json:"jobID"`
			}
			require.NoError(t, json.Unmarshal(stored, &back))
			require.Equal(t, lower, back.JobID)
		})
	}
}

// TestSameJobInTwoCasesIsAdmittedOnce: the same UUID in lower case on one
// job topic and upper case on the other is one job: admitted once, under
// its canonical (lower-case) ID, with that ID in the message the runner
