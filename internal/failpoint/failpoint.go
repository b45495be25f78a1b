// Package failpoint lets the fault-injection suite kill a worker process at
// a precise point — between the ledger write and the offset commit, between
// a vendor accepting an operation and its checkpoint, during the terminal
// PUT — the narrow windows random kills rarely hit. Points are armed only
// when `worker run` finds ANALYSISFLEET_FAILPOINTS in its environment
// ("name=probability,name=probability"); unarmed, Hit is one atomic load.
package failpoint

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// The points the product exposes.
const (
	AdmittedBeforeCommit      = "admitted-before-commit"       // consumer: jobs in the ledger, offsets not committed
	StartedBeforeCheckpoint   = "started-before-checkpoint"    // runner: the vendor accepted, the reference not saved
	DecidedBeforePut          = "decided-before-put"           // runner: outcome in the outbox, nothing PUT yet
	TerminalPutBeforeComplete = "terminal-put-before-complete" // runner: SampleDB has the state, no tombstone yet
)

var armed atomic.Pointer[map[string]float64]

// Arm parses spec ("name=p,name=p") and arms those points. An empty spec
// disarms everything.
func Arm(spec string) error {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		armed.Store(nil)
		return nil
	}
	m := map[string]float64{}
	for _, part := range strings.Split(spec, ",") {
		name, p, ok := strings.Cut(strings.TrimSpace(part), "=")
		prob, err := strconv.ParseFloat(p, 64)
		if !ok || err != nil || prob < 0 || prob > 1 {
			return fmt.Errorf("failpoint %q: want name=probability in [0,1]", part)
		}
		m[name] = prob
	}
	armed.Store(&m)
	return nil
}

// Hit kills the process with SIGKILL — no deferred function, no flush, as a
// crash would — if the point is armed and the dice say so.
func Hit(name string) {
	m := armed.Load()
	if m == nil {
		return
	}
	if p, ok := (*m)[name]; ok && rand.Float64() < p {
		fmt.Fprintf(os.Stderr, "failpoint %s: killing the process\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
