package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/console"
	"go.uber.org/zap"
)

// checkDebugAddr accepts only a loopback address for DEBUG_ADDR (the
// console's rule for its own listener): the profiles show what the worker
// holds (job IDs, credentials in memory), so they are never served beyond
// the machine.
func checkDebugAddr(addr string) error {
	if !console.IsLoopbackAddr(addr) {
		return errors.New("must be a loopback address (127.0.0.1:port, [::1]:port or localhost:port)")
	}
	return nil
}

// serveDebug serves net/http/pprof's handlers on addr (a loopback address,
// checkDebugAddr) until the process exits. A listener that cannot be opened
// is logged; the worker runs on without it.
func serveDebug(addr string, log *zap.Logger) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("DEBUG_ADDR: cannot listen; profiles are not served", zap.String("addr", addr), zap.Error(err))
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Warn("DEBUG_ADDR is set: serving Go profiles (/debug/pprof/)", zap.String("addr", ln.Addr().String()))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
}
