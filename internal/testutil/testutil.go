// Package testutil is what the tests of more than one package share: a
// manual clock (Clock) to give a simulator, a driver or a token source as
// its Now; a context that ends with the test (Context); and the pieces of a
// fleet harness that the node, fleetctl, intake and fleettest tests each
// need around Kafka: the topic and group names a fleet runs with, reading
// records back (ReadN, ReadToEnd) and a record's header (Header).
//
// It is imported by tests only (and by the test-support package
// edr/edrtest); nothing in a binary uses it.
package testutil

import (
	"context"
	"testing"
	"time"
)

// Context returns a context that ends when the test does, or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}
