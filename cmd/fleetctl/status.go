package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// statusReport is `fleetctl status -o json`. A section that could not be
// read is null and its error is in errors.
type statusReport struct {
	Namespace   string           `json:"namespace"`
	Redis       string           `json:"redis"` // REDIS_URL without credentials, or the cluster's seeds
	Group       *groupReport     `json:"group"`
	Lag         *lagReport       `json:"lag"`
	Workers     []workerReport   `json:"workers"`
	Leases      *leaseReport     `json:"leases"`
	Outbox      *int64           `json:"outbox"`
	Quarantined []quarantineItem `json:"quarantined"`
	DeadLetters *dlqCount        `json:"deadLetters"`
	CoolDowns   []coolDownReport `json:"coolDowns"`
	Errors      []string         `json:"errors,omitempty"`
}

type quarantineItem struct {
	Key string   `json:"key"`
	At  jsonTime `json:"at"`
}

type groupReport struct {
	Name     string         `json:"name"`
	State    string         `json:"state"`
	Protocol string         `json:"protocol"`
	Members  []memberReport `json:"members"`
}

type memberReport struct {
	MemberID   string            `json:"memberId"`
	ClientID   string            `json:"clientId"`
	InstanceID string            `json:"instanceId,omitempty"`
	Host       string            `json:"host"`
	Assigned   []topicPartitions `json:"assigned"`
}

type topicPartitions struct {
	Topic      string  `json:"topic"`
	Partitions []int32 `json:"partitions"`
}

type (
	lagReport    = kafkaview.Lag
	partitionLag = kafkaview.PartitionLag
)

type workerReport struct {
	ID       string   `json:"id"`
	LastSeen jsonTime `json:"lastSeen"`
	AgoMs    int64    `json:"lastSeenAgoMs"`
	InFlight int      `json:"inFlight"`
}

type leaseReport struct {
	Now       jsonTime        `json:"now"`       // Redis time
	Held      int64           `json:"held"`      // jobs of live sessions
	Claimable int64           `json:"claimable"` // released, adopted, or of expired sessions
	Expiring  int64           `json:"expiring"`  // jobs of sessions whose deadline is within windowMs
	WindowMs  int64           `json:"windowMs"`  // LEASE_TTL/3
	Sessions  []sessionReport `json:"sessions"`  // earliest deadline first
	Due       []dueReport     `json:"due"`       // claimable jobs, longest claimable first
}

type sessionReport struct {
	ID       string   `json:"id"`
	Worker   string   `json:"worker"`
	Deadline jsonTime `json:"deadline"`
	Jobs     int64    `json:"jobs"`
	Expired  bool     `json:"expired"`
}

type dueReport struct {
	ID       string   `json:"id"`
	Owner    string   `json:"owner"`
	Token    int64    `json:"token"`
	Deadline jsonTime `json:"deadline"`
	Expired  bool     `json:"expired"`
	Decided  bool     `json:"decided"`
}

// dlqCount is the number of records the dead-letter topic holds: end
// offsets minus start offsets, every record still retained, whether it was
// replayed already or not (Kafka does not remember).
type dlqCount struct {
	Topic    string `json:"topic"`
	Disabled bool   `json:"disabled"`
	Records  int64  `json:"records"`
}

type coolDownReport struct {
	Name   string `json:"name"`
	Vendor string `json:"vendor"`
	LeftMs int64  `json:"leftMs"`
}

func (c *cli) status(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("status", "status [-o json] [--leases N]", &o, 30*time.Second)
	maxDue := fs.Int("leases", 20, "list at most this many claimable jobs")
	if _, err := parse(fs, &o, args, 0); err != nil {
		return err
	}
	cfg, err := c.loadConfig(needs{kafka: true, redis: true})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	rep := &statusReport{Namespace: cfg.ns, Redis: cfg.redis.Show}
	c.kafkaStatus(ctx, cfg, rep)
	c.ledgerStatus(ctx, cfg, rep, *maxDue)

	if o.json() {
		if err := writeJSON(c.stdout, rep); err != nil {
			return err
		}
	} else {
		printStatus(c.stdout, cfg, rep)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("status incomplete: %s", strings.Join(rep.Errors, "; "))
	}
	return nil
}

func (c *cli) kafkaStatus(ctx context.Context, cfg *config, rep *statusReport) {
	fail := func(what string, err error) { rep.Errors = append(rep.Errors, "kafka: "+what+": "+err.Error()) }
	cl, err := cfg.kafkaClient()
	if err != nil {
		fail("client", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	described, err := adm.DescribeGroups(ctx, cfg.group)
	if err != nil {
		fail("describe group "+cfg.group, err)
	} else {
		rep.Group = groupFrom(cfg.group, described[cfg.group])
	}

	topics, err := cfg.jobTopics(ctx, adm)
	if err != nil {
		fail("topics", err)
		return
	}
	list := append([]string(nil), topics...)
	if cfg.dlq != "" {
		list = append(list, cfg.dlq)
	}
	var starts, ends kadm.ListedOffsets
	if len(list) > 0 {
		if starts, err = adm.ListStartOffsets(ctx, list...); err != nil {
			fail("list start offsets", err)
			return
		}
		if ends, err = adm.ListEndOffsets(ctx, list...); err != nil {
			fail("list end offsets", err)
			return
		}
	}
	commits, err := adm.FetchOffsets(ctx, cfg.group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		fail("fetch committed offsets of "+cfg.group, err)
		return
	}
	rep.Lag = kafkaview.LagFrom(topics, commits, starts, ends)
	if cfg.dlq == "" {
		rep.DeadLetters = &dlqCount{Disabled: true}
	} else if n, err := kafkaview.CountRecords(cfg.dlq, starts, ends); err != nil {
		fail("dead letters", err)
	} else {
		rep.DeadLetters = &dlqCount{Topic: cfg.dlq, Records: n}
	}
}

func groupFrom(name string, g kadm.DescribedGroup) *groupReport {
	gr := &groupReport{Name: name, State: g.State, Protocol: g.Protocol, Members: []memberReport{}}
	if g.Err != nil {
		// A group nobody joined yet: Kafka says Dead, some brokers say
		// "not found". Either way: no members.
		gr.State = "Dead"
		if !errors.Is(g.Err, kerr.GroupIDNotFound) {
			gr.State = "unknown (" + g.Err.Error() + ")"
		}
	}
	for _, m := range g.Members {
		mr := memberReport{MemberID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost, Assigned: []topicPartitions{}}
		if m.InstanceID != nil {
			mr.InstanceID = *m.InstanceID
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				ps := append([]int32(nil), t.Partitions...)
				sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
				mr.Assigned = append(mr.Assigned, topicPartitions{Topic: t.Topic, Partitions: ps})
			}
			sort.Slice(mr.Assigned, func(i, j int) bool { return mr.Assigned[i].Topic < mr.Assigned[j].Topic })
		}
		gr.Members = append(gr.Members, mr)
	}
	sort.Slice(gr.Members, func(i, j int) bool {
		a, b := gr.Members[i], gr.Members[j]
		if a.ClientID != b.ClientID {
			return a.ClientID < b.ClientID
		}
		return a.MemberID < b.MemberID
	})
	return gr
}

func (c *cli) ledgerStatus(ctx context.Context, cfg *config, rep *statusReport, maxDue int) {
	// The store's errors say what they were doing ("state: workers: …").
	fail := func(err error) { rep.Errors = append(rep.Errors, "redis: "+err.Error()) }
	st, rdb, err := cfg.openStore()
	if err != nil {
		fail(err)
		return
	}
	defer rdb.Close()
	now, err := st.Now(ctx)
	if err != nil {
		fail(err)
		return
	}
	if ws, err := st.Workers(ctx); err != nil {
		fail(err)
	} else {
		rep.Workers = []workerReport{}
		for _, w := range ws {
			rep.Workers = append(rep.Workers, workerReport{ID: w.ID, LastSeen: jsonTime(w.Seen),
				AgoMs: now.Sub(w.Seen).Milliseconds(), InFlight: w.InFlight})
		}
	}
	window := cfg.leaseTTL / 3
	if sum, err := st.LeaseSummary(ctx, window, int64(max(maxDue, 0))); err != nil {
		fail(err)
	} else {
		lr := &leaseReport{Now: jsonTime(sum.Now), Held: sum.Held, Claimable: sum.Claimable, Expiring: sum.Expiring,
			WindowMs: window.Milliseconds(), Sessions: []sessionReport{}, Due: []dueReport{}}
		for _, s := range sum.Sessions {
			lr.Sessions = append(lr.Sessions, sessionReport{ID: s.ID, Worker: s.Worker, Deadline: jsonTime(s.Deadline),
				Jobs: s.Jobs, Expired: s.Expired})
		}
		for _, d := range sum.Due {
			lr.Due = append(lr.Due, dueReport{ID: d.ID, Owner: d.Owner, Token: d.Token, Deadline: jsonTime(d.Deadline),
				Expired: d.Expired, Decided: d.Decided})
		}
		rep.Leases = lr
	}
	if n, err := st.OutboxDepth(ctx); err != nil {
		fail(fmt.Errorf("outbox: %w", err))
	} else {
		rep.Outbox = &n
	}
	if q, err := st.Quarantined(ctx, 20); err != nil {
		fail(fmt.Errorf("quarantine: %w", err))
	} else {
		rep.Quarantined = []quarantineItem{}
		for _, x := range q {
			rep.Quarantined = append(rep.Quarantined, quarantineItem{Key: x.Key, At: jsonTime(x.At)})
		}
	}
	if cds, err := st.CoolDowns(ctx); err != nil {
		fail(err)
	} else {
		rep.CoolDowns = []coolDownReport{}
		for _, cd := range cds {
			vendor, _, _ := strings.Cut(cd.Name, ":")
			rep.CoolDowns = append(rep.CoolDowns, coolDownReport{Name: cd.Name, Vendor: vendor, LeftMs: cd.Left.Milliseconds()})
		}
	}
}

func printStatus(w io.Writer, cfg *config, rep *statusReport) {
	kv(w, "namespace", rep.Namespace)
	kv(w, "redis", rep.Redis)
	if g := rep.Group; g != nil {
		proto := ""
		if g.Protocol != "" {
			proto = ", " + g.Protocol
		}
		kv(w, "group", fmt.Sprintf("%s: %s, %s%s", g.Name, g.State, plural(int64(len(g.Members)), "member", "members"), proto))
	} else {
		kv(w, "group", cfg.group+": unavailable")
	}

	if g := rep.Group; g != nil && len(g.Members) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "MEMBER", "HOST", "PARTITIONS")
		for _, m := range g.Members {
			var parts []string
			for _, a := range m.Assigned {
				parts = append(parts, a.Topic+"["+ranges(a.Partitions)+"]")
			}
			name := m.ClientID
			if m.InstanceID != "" {
				name += " (" + m.InstanceID + ")"
			}
			t.row(name, m.Host, strings.Join(parts, " "))
		}
		t.flush()
	}

	if l := rep.Lag; l != nil {
		fmt.Fprintln(w)
		t := newTable(w, "TOPIC", "PARTITIONS", "LAG")
		parts := 0
		for _, tl := range l.Topics {
			parts += len(tl.Partitions)
			lag := strconv.FormatInt(tl.Lag, 10)
			if tl.Error != "" {
				lag += " (" + tl.Error + ")"
			}
			t.row(tl.Topic, strconv.Itoa(len(tl.Partitions)), lag)
		}
		t.row("total", strconv.Itoa(parts), strconv.FormatInt(l.Total, 10))
		t.flush()
	}

	fmt.Fprintln(w)
	switch {
	case rep.Workers == nil:
		kv(w, "workers", "unavailable")
	case len(rep.Workers) == 0:
		kv(w, "workers", "none alive (none renewed its leases within 10 × LEASE_TTL)")
	default:
		t := newTable(w, "WORKER", "LAST SEEN", "IN FLIGHT")
		for _, wr := range rep.Workers {
			t.row(wr.ID, textfmt.Duration(time.Duration(wr.AgoMs)*time.Millisecond)+" ago", strconv.Itoa(wr.InFlight))
		}
		t.flush()
	}

	fmt.Fprintln(w)
	if l := rep.Leases; l != nil {
		kv(w, "leases", fmt.Sprintf("%d held by %s; %d claimable; %d in sessions expiring within %s (LEASE_TTL/3)",
			l.Held, plural(int64(len(l.Sessions)), "session", "sessions"), l.Claimable, l.Expiring,
			textfmt.Duration(time.Duration(l.WindowMs)*time.Millisecond)))
		if len(l.Sessions) > 0 {
			t := newTable(w, "  SESSION", "WORKER", "JOBS", "DEADLINE")
			for _, s := range l.Sessions {
				when := textfmt.Relative(time.Time(s.Deadline), time.Time(l.Now))
				if s.Expired {
					when += " (expired: its jobs are claimable)"
				}
				t.row("  "+s.ID, s.Worker, strconv.FormatInt(s.Jobs, 10), when)
			}
			t.flush()
		}
		if len(l.Due) > 0 {
			t := newTable(w, "  CLAIMABLE JOB", "LAST OWNER", "TOKEN", "SINCE", "STATE")
			for _, d := range l.Due {
				when := textfmt.Relative(time.Time(d.Deadline), time.Time(l.Now))
				if time.Time(d.Deadline).UnixMilli() == 0 {
					when = "released"
				}
				what := "claimable"
				if !d.Expired {
					what = "claimable later"
				}
				if d.Decided {
					what += ", outcome decided"
				}
				t.row("  "+d.ID, d.Owner, strconv.FormatInt(d.Token, 10), when, what)
			}
			t.flush()
			if shown := int64(len(l.Due)); shown < l.Claimable {
				fmt.Fprintf(w, "  … %d more (--leases N)\n", l.Claimable-shown)
			}
		}
	} else {
		kv(w, "leases", "unavailable")
	}
	if rep.Outbox != nil {
		kv(w, "outbox", plural(*rep.Outbox, "decided job", "decided jobs")+" waiting for SampleDB to acknowledge the terminal state")
	} else {
		kv(w, "outbox", "unavailable")
	}
	if len(rep.Quarantined) > 0 {
		kv(w, "QUARANTINED", plural(int64(len(rep.Quarantined)), "ledger key", "ledger keys")+
			" of the wrong type moved aside (inspect, then delete them by hand):")
		for _, q := range rep.Quarantined {
			fmt.Fprintf(w, "  %s  %s\n", stamp(time.Time(q.At)), q.Key)
		}
	}
	switch d := rep.DeadLetters; {
	case d == nil:
		kv(w, "dead letters", "unavailable")
	case d.Disabled:
		kv(w, "dead letters", "disabled (KAFKA_DLQ_TOPIC is empty)")
	default:
		kv(w, "dead letters", fmt.Sprintf("%s in %s (every record the topic retains, replayed or not)",
			plural(d.Records, "record", "records"), d.Topic))
	}
	switch {
	case rep.CoolDowns == nil:
		kv(w, "cool-downs", "unavailable")
	case len(rep.CoolDowns) == 0:
		kv(w, "cool-downs", "none in force")
	default:
		kv(w, "cool-downs", fmt.Sprintf("%d in force (fleet-wide, after a vendor's 429)", len(rep.CoolDowns)))
		t := newTable(w, "  LIMITER", "VENDOR", "LEFT")
		for _, cd := range rep.CoolDowns {
			t.row("  "+cd.Name, cd.Vendor, textfmt.Duration(time.Duration(cd.LeftMs)*time.Millisecond))
		}
		t.flush()
	}
}

// ranges renders sorted partitions compactly: 0-3,7.
func ranges(ps []int32) string {
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		} else {
			fmt.Fprintf(&b, "%d", ps[i])
		}
		i = j + 1
	}
	return b.String()
}
