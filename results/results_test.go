package results

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

func TestEncodeAlwaysFits(t *testing.T) {
	t.Parallel()
	hosts := make([]string, edr.MaxListed)
	for i := range hosts {
		hosts[i] = strings.Repeat("x", 4000)
	}
	var tasks []TaskSummary
	for range 8 {
		tasks = append(tasks, TaskSummary{Kind: "k", Error: strings.Repeat("e", 1<<20), Result: &edr.Result{Hosts: hosts, Notes: hosts}})
	}
	s := Summary{Reason: strings.Repeat("r", 1<<20), Tasks: tasks}
	orig := tasks[0].Result
	b, cut := Encode(&s)
	require.True(t, cut)
	require.LessOrEqual(t, len(b), MaxSummaryBytes)
	require.True(t, s.Truncated)
	require.Len(t, orig.Hosts, edr.MaxListed, "the checkpoint's own result is left whole")
}
