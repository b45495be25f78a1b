package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// cmdSim serves every simulator on fixed ports until SIGTERM, for
// multi-process tests and for trying a `worker run` by hand. When ready it
// prints one line "READY <json>" whose object is the worker environment
// pointing at the simulators.
func cmdSim(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker sim", flag.ContinueOnError)
	var cfg simstack.Config
	fast := fs.Bool("fast", false, "fast simulators (tens of milliseconds per operation)")
	vendorTime := fs.Duration("vendor-time", 0, "make every vendor operation take about this long (long-running jobs)")
	fs.StringVar(&cfg.Host, "host", "127.0.0.1", "listen host (loopback only in this workplace)")
	fs.IntVar(&cfg.SampleDBPort, "sampledb-port", 18080, "SampleDB simulator port (0 = any)")
	fs.IntVar(&cfg.CBCPort, "cbc-port", 18081, "Carbon Black Cloud simulator port")
	fs.IntVar(&cfg.CBLRPort, "cblr-port", 18082, "CB EDR Live Response simulator port")
	fs.IntVar(&cfg.CytomicPort, "cytomic-port", 18083, "Cytomic simulator port")
	fs.IntVar(&cfg.SophosPort, "sophos-port", 18084, "Sophos simulator port")
	if code, ok := parseFlags(fs, "usage: worker sim [flags]\n\n"+
		"Serves the SampleDB and vendor simulators on fixed loopback ports until\n"+
		"SIGTERM; prints \"READY <json>\" (the worker environment pointing at them).\n\nflags:\n", args, stdout, stderr, false); !ok {
		return code
	}
	cfg.Timing = simstack.DevTiming
	if *fast {
		cfg.Timing = simstack.TestTiming
	}
	if d := *vendorTime; d > 0 {
		cfg.Timing.CBCRun, cfg.Timing.SophosRun, cfg.Timing.CBLRCommand = d, d, d/2
		cfg.Timing.CytomicAnswerMin, cfg.Timing.CytomicAnswerMax = d/2, d
	}
	stack, err := simstack.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "worker sim: %v\n", err)
		return 1
	}
	defer stack.Close()
	env, _ := json.Marshal(stack.Env())
	fmt.Fprintf(stdout, "READY %s\n", env)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}
