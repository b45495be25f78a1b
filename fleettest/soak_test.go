package fleettest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/loadgen"
)

// TestSoak: 3 workers, a random fault every few seconds (kill -9, SIGSTOP
// longer than the TTL, broker restart and pause, Redis restarted empty,
// SampleDB outage, vendor 429 storms) while jobs flow; the checker must find
// zero lost, zero double-terminal and zero zombie writes. With -soak it is
// the 10-minute, 20,000-job soak run by hand; without, a one-minute version
// keeps it working in CI.
func TestSoak(t *testing.T) {
	t.Parallel()
	jobs, rate, every := 1500, 30.0, 6*time.Second
	if *soak {
		jobs, rate, every = 20000, 34, 5*time.Second
	}
	c := newCluster(t, clusterOpts{})
	stopSup := c.supervise(restartAfter)
	done := make(chan *loadgen.Stats, 1)
	go func() {
		lctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		done <- c.load(lctx, loadgen.Config{Jobs: jobs, Rate: rate, Aborts: jobs / 100})
	}()
	faultSchedule(5 * time.Second)
	rssBefore, gorBefore := c.footprint()

	kinds := []string{"kill -9", "SIGSTOP", "broker restart", "broker pause", "sampledb outage", "vendor storm", "redis restart"}
	injected := map[string]int{}
	var st *loadgen.Stats
	var faultWG sync.WaitGroup
loop:
	for {
		select {
		case st = <-done:
			break loop
		case <-time.After(every):
		}
		kind := kinds[rand.IntN(len(kinds))]
		if kind == "redis restart" && (injected[kind] >= 2 || !*soak) {
			kind = "kill -9" // rare: it costs re-seeding every job
		}
		injected[kind]++
		ws := c.liveWorkers()
		switch kind {
		case "kill -9":
			if len(ws) > 1 {
				c.kill9(ws[rand.IntN(len(ws))].id)
			}
		case "SIGSTOP":
			if len(ws) > 1 {
				id := ws[rand.IntN(len(ws))].id
				faultWG.Add(1)
				go func() { defer faultWG.Done(); c.pause(id, 2*c.opts.leaseTTL) }()
			}
		case "broker restart":
			c.restartBroker(syscall.SIGKILL)
		case "broker pause":
			c.fault("broker paused", "kafkabroker")
			c.broker.signal(syscall.SIGSTOP)
			faultSchedule(3 * time.Second)
			c.broker.signal(syscall.SIGCONT)
		case "sampledb outage":
			c.addFault("sampledb", map[string]any{"name": "outage", "status": 503, "for": int64(8 * time.Second)})
		case "vendor storm":
			v := []string{"cbc", "sophos", "cytomic", "cblr"}[rand.IntN(4)]
			c.addFault(v, map[string]any{"name": "storm", "status": 429, "retryAfter": int64(time.Second), "count": 100, "probability": 0.5})
		case "redis restart":
			c.restartRedisEmpty()
		}
	}
	faultWG.Wait()
	c.waitTerminal(st.Valid, 5*time.Minute)
	stopSup()
	rssAfter, gorAfter := c.footprint()
	h := c.history()
	r := check(h, st)
	r.print(t, fmt.Sprintf("soak: %d jobs, a fault every %s", jobs, every),
		fmt.Sprintf("  %-34s %v", "faults injected", injected),
		fmt.Sprintf("  %-34s %s → %s", "worker RSS (KiB, per worker)", rssBefore, rssAfter),
		fmt.Sprintf("  %-34s %s → %s", "worker goroutines", gorBefore, gorAfter))
	require.True(t, r.ok())
}

// footprint reads each live worker's RSS and goroutine count.
func (c *cluster) footprint() (rss, goroutines string) {
	var r, g []string
	for _, w := range c.liveWorkers() {
		r = append(r, fmt.Sprintf("%s=%d", w.id, w.proc.rssKiB()))
		g = append(g, fmt.Sprintf("%s=%s", w.id, scrapeValue(w.http, "go_goroutines")))
	}
	return strings.Join(r, " "), strings.Join(g, " ")
}

func scrapeValue(addr, metric string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, metric+" ") {
			return strings.TrimPrefix(line, metric+" ")
		}
	}
	return "?"
}
