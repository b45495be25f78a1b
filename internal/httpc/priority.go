package httpc

import "context"

// Priority orders the requests of one process that wait for the same
// fleet-wide budget (a Limiter): a lower value is sent first. The runner
// marks every vendor call with the priority of what it does, so a cancel
// never waits behind polls when the budget is short, and starts and
// collects go before the polls that merely ask for news.
type Priority uint8

// Priorities, first served first.
const (
	PriorityCancel  Priority = iota // stopping work at the vendor (abort, timeout)
	PriorityStart                   // starting an operation (and looking one up)
	PriorityCollect                 // fetching the results of a finished one
	PriorityPoll                    // asking how an operation is doing
)

// Priorities lists every priority, first served first.
var Priorities = []Priority{PriorityCancel, PriorityStart, PriorityCollect, PriorityPoll}

func (p Priority) String() string {
	switch p {
	case PriorityCancel:
		return "cancel"
	case PriorityStart:
		return "start"
	case PriorityCollect:
		return "collect"
	case PriorityPoll:
		return "poll"
	}
	return "unknown"
}

type priorityKey struct{}

// WithPriority marks the requests made with ctx as being of priority p.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf returns the priority ctx carries; PriorityStart when none.
func PriorityOf(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok {
		return p
	}
	return PriorityStart
}
