// Package fleettest is the fleet's fault-injection suite, Jepsen-style: it
// builds the real binaries and runs, as separate OS processes on loopback, a
// Kafka-protocol broker (cmd/kafkabroker, kfake with a data directory), the
// simulators (`worker sim`), a redis-server it owns, and three or more
// workers (`worker run`). It injects faults — kill -9 at random moments and
// at failpoints, SIGSTOP longer than the lease TTL, Redis restarted empty,
// the broker restarted and paused, consumer-group churn, graceful drain,
// SampleDB and vendor outages, abort races, bad input at volume — and then a
// checker reads the full history (SampleDB's transitions and request log,
// every vendor simulator's request log, the ledger's lease history) and
// verifies what the product promises:
//
//   - every job produced reaches exactly one terminal state;
//   - transitions only move forward (enqueued → executing → terminal);
//   - no worker makes a request about a job after it lost that job's lease
//     (requests are attributed by User-Agent worker ID and the job
//     correlation header, leases by the history in Redis);
//   - vendor operations are started once per (job, task), and any restart is
//     reported;
//   - abort latencies and takeover times.
//
// Every test prints a table of figures. `go test ./fleettest/` runs the
// suite (part of `go test -race ./...`); `go test ./fleettest/ -run TestSoak
// -timeout 40m -v -args -soak` runs the 10-minute soak by hand.
package fleettest
