package node_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// TestEchoedCredentialsAreMasked: CB Cloud and Live Response refuse every
// request with 403 `invalid token "<the X-Auth-Token sent>"`. The job fails,
// and neither the CB Cloud SECRET/ID nor the Live Response token appears in
// its failure reason, its tasks, the result topic or the worker log.
func TestEchoedCredentialsAreMasked(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	secrets := redact.New(simstack.CBCAPISecret, simstack.CBLRToken, simstack.AnalyzerKey)
	f := newFleet(t, fleetOpts{vendors: []string{edr.KindCBCEventExport, edr.KindCBLRTriage}, redact: secrets, logs: core})
	f.stack.CBC.Kit().Add(simhttp.Fault{Name: "echo", Method: "POST", Status: 403, Echo: "X-Auth-Token"})
	f.stack.CBLR.Kit().Add(simhttp.Fault{Name: "echo", Method: "POST", Status: 403, Echo: "X-Auth-Token"})
	f.startWorker("w1")

	job := newJob("win")
	job.Submission.MetaData = map[string]any{"sensorId": 1}
	f.submit(testutil.TopicOSL, job)
	f.waitTerminal([]string{job.JobID}, 30*time.Second)
	f.requireExactlyOneTerminal(job.JobID, sampledb.StateFailed)

	sum := f.results(1)[job.JobID]
	raw, err := json.Marshal(sum)
	require.NoError(t, err)
	var dump strings.Builder
	dump.Write(raw)
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		dump.WriteString(e.Message)
		dump.Write(b)
	}
	require.Contains(t, string(raw), redact.Mask, "the vendors' answers were quoted, masked: %s", raw)
	for _, s := range []string{simstack.CBCAPISecret, url.QueryEscape(simstack.CBCAPISecret), simstack.CBLRToken} {
		require.NotContains(t, dump.String(), s, "a credential the vendor echoed leaked")
	}
}

// TestReadinessIsCached: however often /readyz is asked, the node checks
// Redis and Kafka at most once a second. With Redis cut off, the answer
// stays the one computed first (ready) until the second is over.
func TestReadinessIsCached(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	w := f.startWorker("w1")
	require.NoError(t, w.Ready(context.Background()))
	w.dialer.partition()
	t.Cleanup(w.dialer.heal)
	start := time.Now()
	err := w.Ready(context.Background())
	if time.Since(start) < time.Second {
		require.NoError(t, err, "a second call within the second is answered from the cache, without Redis")
	}
}
