package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxInflight       = 1000
	DefaultJobTimeout        = 4 * time.Hour
	DefaultAbortPollInterval = 5 * time.Second
	DefaultClaimInterval     = time.Second
	DefaultPollMin           = 2 * time.Second
	DefaultPollMax           = time.Minute
	DefaultRetryMin          = time.Second
	DefaultRetryMax          = time.Minute
	DefaultDrainTimeout      = 10 * time.Second
	DefaultReconcileInterval = time.Minute
	DefaultCancelTimeout     = 30 * time.Second
	DefaultPublishTimeout    = 2 * time.Minute
	DefaultStartConcurrency  = 16
)

// SampleDB is the part of the SampleDB v2 job API the runner uses
// (*sampledb.Client implements it).
type SampleDB interface {
	UpdateJob(ctx context.Context, id, state string) (*sampledb.Job, error)
	GetJob(ctx context.Context, id string) (*sampledb.Job, error)
	ListJobs(ctx context.Context, opts sampledb.ListOptions, fn func(page []sampledb.Job) error) error
	CreateTask(ctx context.Context, jobID, worker string) (*sampledb.Task, error)
	UpdateTask(ctx context.Context, jobID string, taskID sampledb.ID, state string) (*sampledb.Task, error)
}

// Accounts resolves customers to their vendor drivers.
type Accounts interface {
	// Drivers returns customer's drivers by task kind, or an error saying
	// why the customer has none. The map is read-only; callers resolve
	// again for every call (a reload replaces drivers).
	Drivers(customer string) (map[string]edr.Driver, error)
}

// StaticAccounts serves the same drivers to every customer.
type StaticAccounts map[string]edr.Driver

// Drivers returns the drivers, whatever the customer.
func (s StaticAccounts) Drivers(string) (map[string]edr.Driver, error) { return s, nil }

// Publisher publishes a finished job's summary (key = job ID). The consumer
// package's Kafka client implements it.
type Publisher interface {
	Publish(ctx context.Context, key string, value []byte) error
}

// Config configures a Runner. Zero values mean the documented defaults.
type Config struct {
	// WorkerID names this worker in leases, logs and the User-Agent.
	WorkerID string
	// Store is the job ledger. Required.
	Store *state.Store
	// SampleDB receives every job and task transition. Required.
	SampleDB SampleDB
	// Accounts resolves a job's customer to the drivers of that customer's
	// own vendor accounts (internal/tenant.Registry). A job whose customer
	// has none fails with the reason; a kind without a driver for the
	// customer is never planned. Nil serves Drivers to every customer.
	Accounts Accounts
	// Drivers are the vendors of a single-customer deployment, by task
	// kind, used when Accounts is nil.
	Drivers map[string]edr.Driver
	// Results, when set, receives a summary of every finished job.
	Results Publisher
	// Playbook maps classifications to tasks. Default DefaultPlaybook().
	Playbook *Playbook

	MaxInflight        int           // jobs at once; default 1000
	JobTimeout         time.Duration // from first admission; default 4h
	AbortPollInterval  time.Duration // SampleDB abort poll; default 5s
	ClaimInterval      time.Duration // expired-lease takeover poll; default 1s
	PollMin, PollMax   time.Duration // adaptive vendor polling bounds; 2s, 1m
	RetryMin, RetryMax time.Duration // backoff for retryable failures; 1s, 1m
	DrainTimeout       time.Duration // longest wait for in-flight calls at SIGTERM; 10s
	ReconcileInterval  time.Duration // SampleDB ↔ ledger reconciliation; 1m
	CancelTimeout      time.Duration // vendor cancel attempts on abort/timeout; 30s
	PublishTimeout     time.Duration // result publication attempts; 2m
	// StartConcurrency bounds, per vendor, the operations this worker is
	// starting at once: an operation the vendor accepted but whose reference
	// is not yet checkpointed is started again after a crash, so few should
	// be in that window at any moment. Default 16.
	StartConcurrency int

	// Redact masks credentials in every text the runner writes down (task
	// errors, notes, progress, outcome reasons); nil masks nothing. Wrap
	// Logger with the same set.
	Redact *redact.Set

	// Observer receives events for metrics; optional.
	Observer Observer
	Logger   *zap.Logger
}

func (c *Config) setDefaults() error {
	if c.WorkerID == "" {
		return errors.New("worker: WorkerID is required")
	}
	if c.Store == nil {
		return errors.New("worker: Store is required")
	}
	if c.SampleDB == nil {
		return errors.New("worker: SampleDB is required")
	}
	if c.MaxInflight < 0 {
		return fmt.Errorf("worker: MaxInflight %d is negative", c.MaxInflight)
	}
	c.MaxInflight = cmp.Or(c.MaxInflight, DefaultMaxInflight)
	c.JobTimeout = cmp.Or(c.JobTimeout, DefaultJobTimeout)
	c.AbortPollInterval = cmp.Or(c.AbortPollInterval, DefaultAbortPollInterval)
	c.ClaimInterval = cmp.Or(c.ClaimInterval, DefaultClaimInterval)
	c.PollMin = cmp.Or(c.PollMin, DefaultPollMin)
	c.PollMax = max(cmp.Or(c.PollMax, DefaultPollMax), c.PollMin)
	c.RetryMin = cmp.Or(c.RetryMin, DefaultRetryMin)
	c.RetryMax = max(cmp.Or(c.RetryMax, DefaultRetryMax), c.RetryMin)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.ReconcileInterval = cmp.Or(c.ReconcileInterval, DefaultReconcileInterval)
	c.CancelTimeout = cmp.Or(c.CancelTimeout, DefaultCancelTimeout)
	c.PublishTimeout = cmp.Or(c.PublishTimeout, DefaultPublishTimeout)
	c.StartConcurrency = cmp.Or(c.StartConcurrency, DefaultStartConcurrency)
	if c.Playbook == nil {
		c.Playbook = DefaultPlaybook()
	}
	if err := c.Playbook.Validate(); err != nil {
		return err
	}
	if c.Drivers == nil {
		c.Drivers = map[string]edr.Driver{}
	}
	for kind, d := range c.Drivers {
		if d == nil || d.Kind() != kind {
			return fmt.Errorf("worker: driver for %q is missing or reports another kind", kind)
		}
	}
	if c.Accounts == nil {
		c.Accounts = StaticAccounts(c.Drivers)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Observer is told what happens, for metrics. Methods must not block.
type Observer interface {
	JobStarted(resumed bool)
	JobFinished(state string, d time.Duration)
	TaskFinished(kind, state string)
	AbortNoticed(latency time.Duration)
	LeaseLost(reason string)
	// SessionLost reports the loss of the worker's session (and with it
	// every job it held, each also reported to LeaseLost).
	SessionLost(reason string)
	Claimed(n int)
	// LeaseRenewed reports each renewal round trip.
	LeaseRenewed(held int, err error)
	// VendorCall reports one driver call: vendor (cbc, …), operation
	// (start, poll, collect, cancel), result (ok, retryable, permanent).
	VendorCall(vendor, op, result string, d time.Duration)
	// VendorStarted reports a vendor operation begun for a task: how is
	// "first", "reattached" (an earlier start was found at the vendor),
	// "again" (the vendor surely had none) or "again_unverified" (the
	// vendor could not be searched: it may now run twice).
	VendorStarted(vendor, how string)
	// DeliveryRefused reports a terminal state SampleDB refused (412) for a
	// job it does not hold as terminal; the runner retries.
	DeliveryRefused(state string)
	// Quarantined reports ledger keys moved aside for holding the wrong type.
	Quarantined(n int)
}

type nopObserver struct{}

func (nopObserver) JobStarted(bool)                                  {}
func (nopObserver) JobFinished(string, time.Duration)                {}
func (nopObserver) TaskFinished(string, string)                      {}
func (nopObserver) AbortNoticed(time.Duration)                       {}
func (nopObserver) LeaseLost(string)                                 {}
func (nopObserver) SessionLost(string)                               {}
func (nopObserver) Claimed(int)                                      {}
func (nopObserver) LeaseRenewed(int, error)                          {}
func (nopObserver) VendorCall(string, string, string, time.Duration) {}
func (nopObserver) VendorStarted(string, string)                     {}
func (nopObserver) DeliveryRefused(string)                           {}
func (nopObserver) Quarantined(int)                                  {}
