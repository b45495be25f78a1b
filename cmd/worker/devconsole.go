package main

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/console"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/state"
)

// devConsoleAddr is where worker dev serves the console when the port is
// free (else any free loopback port).
const devConsoleAddr = "127.0.0.1:8089"

// startConsole serves the operator console over the dev fleet, with write
// access (it answers loopback clients only: nothing else can reach it). It
// returns the console's URL and what stops it.
func (d *dev) startConsole(ctx context.Context, redisURL string, brokers, topics []string, log *zap.Logger) (string, func(), error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return "", nil, err
	}
	rdb := redis.NewClient(opts)
	st, err := state.New(rdb, state.Config{Namespace: d.ns})
	if err != nil {
		_ = rdb.Close()
		return "", nil, err
	}
	kr, err := console.NewKafka(console.KafkaConfig{Brokers: brokers, Group: intake.DefaultGroup,
		Topics: topics, DLQTopic: intake.DefaultDLQTopic, ResultTopic: results.DefaultTopic})
	if err != nil {
		_ = rdb.Close()
		return "", nil, err
	}
	srv, err := console.New(console.Config{Store: st, Kafka: kr, Write: true, Logger: log.Named("console")})
	if err != nil {
		kr.Close()
		_ = rdb.Close()
		return "", nil, err
	}
	ln, err := net.Listen("tcp", devConsoleAddr)
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0") // 8089 is taken
	}
	if err != nil {
		kr.Close()
		_ = rdb.Close()
		return "", nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(cctx, ln) }()
	stop := func() {
		cancel()
		<-done
		kr.Close()
		_ = rdb.Close()
	}
	return "http://" + ln.Addr().String() + "/", stop, nil
}
