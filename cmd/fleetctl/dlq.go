package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
)

// deadLetter is one DLQ record as `fleetctl dlq list -o json` shows it.
type deadLetter struct {
	Partition       int32    `json:"partition"` // in the DLQ topic
	Offset          int64    `json:"offset"`    // in the DLQ topic
	Time            jsonTime `json:"time"`      // when it was dead-lettered
	Reason          string   `json:"reason"`
	Error           string   `json:"error"`
	SourceTopic     string   `json:"sourceTopic"`
	SourcePartition *int32   `json:"sourcePartition"`
	SourceOffset    *int64   `json:"sourceOffset"`
	Worker          string   `json:"worker,omitempty"`
	Key             string   `json:"key"` // printable rendering
	ValueBytes      int      `json:"valueBytes"`
	// Truncated: part of the record was cut when dead-lettered to make the
	// letter fit (header dlq-truncated): TruncatedParts says which ("key",
	// "value", "headers"), the Original fields how large the record was
	// (header dlq-original-sizes; a letter from before that header names
	// the value's size only). Not replayable.
	Truncated           bool     `json:"truncated"`
	TruncatedParts      []string `json:"truncatedParts,omitempty"`
	OriginalBytes       int      `json:"originalBytes,omitempty"` // the value's
	OriginalKeyBytes    int      `json:"originalKeyBytes,omitempty"`
	OriginalHeaders     int      `json:"originalHeaders,omitempty"`
	OriginalHeaderBytes int      `json:"originalHeaderBytes,omitempty"`
	ReplayedFrom        string   `json:"replayedFrom,omitempty"`
	// RefusedTopic: its dlq-source-topic is not one of the configured job
	// topics (KAFKA_TOPICS / KAFKA_TOPIC_REGEX): never replayed there.
	RefusedTopic  bool    `json:"refusedTopic,omitempty"`
	Replayable    bool    `json:"replayable"`
	NotReplayable string  `json:"notReplayable,omitempty"` // why not
	Value         *string `json:"value,omitempty"`         // only with --show-values, cut to --value-bytes
}

// letterOf reads the consumer's dead-letter headers; whether the letter
// may be replayed is kafkaview's verdict (the one rule, shared with the
// console): only whole, and only into one of cfg's job topics (its
// dlq-source-topic is a header anyone who can write to the DLQ can set).
func letterOf(r *kgo.Record, cfg *config) deadLetter {
	return letterFrom(r, cfg.replayJobTopics().Judge(r))
}

// letterFrom is letterOf with the verdict already made.
func letterFrom(r *kgo.Record, v kafkaview.Verdict) deadLetter {
	d := deadLetter{Partition: r.Partition, Offset: r.Offset, Time: jsonTime(r.Timestamp),
		Key: printable(r.Key), ValueBytes: len(r.Value)}
	l := v.Letter
	d.Reason, d.Error, d.SourceTopic, d.SourcePartition, d.SourceOffset = l.Reason, l.Error, l.SourceTopic, l.SourcePartition, l.SourceOffset
	d.Worker, d.ReplayedFrom = l.Worker, l.ReplayedFrom
	if !l.At.IsZero() {
		d.Time = jsonTime(l.At)
	}
	if len(l.Truncated) > 0 {
		d.Truncated = true
		for _, p := range l.Truncated {
			d.TruncatedParts = append(d.TruncatedParts, clip(printable([]byte(p)), 20))
		}
	}
	if l.OriginalKnown {
		d.OriginalBytes, d.OriginalKeyBytes, d.OriginalHeaders, d.OriginalHeaderBytes = l.Original.Value, l.Original.Key, l.Original.Headers, l.Original.HeaderBytes
	}
	d.Replayable, d.RefusedTopic, d.NotReplayable = v.Replayable, v.RefusedTopic, v.Why
	return d
}

// quoteTopic renders a topic name from a header for the terminal
// (kafkaview.QuoteTopic).
func quoteTopic(t string) string { return kafkaview.QuoteTopic(t) }

// span is the part of one DLQ partition to read.
type span = kafkaview.Span

// dlqSpans captures the DLQ's offsets now: every read ends at these end
// offsets, so fleetctl never waits for letters that arrive later.
func dlqSpans(ctx context.Context, cl *kgo.Client, topic string) (map[int32]span, error) {
	return topicSpans(ctx, cl, topic, "DLQ topic")
}

// topicSpans captures topic's offsets now (kafkaview.Spans); what names
// the topic in errors.
func topicSpans(ctx context.Context, cl *kgo.Client, topic, what string) (map[int32]span, error) {
	return kafkaview.Spans(ctx, cl, topic, what)
}

// readDLQ reads topic within spans with a direct consumer of cfg's
// (kafkaview.Read).
func readDLQ(ctx context.Context, cfg *config, topic string, spans map[int32]span, fn func(*kgo.Record) error) error {
	return kafkaview.Read(ctx, cfg.kafkaClient, topic, spans, fn)
}

// reasonFilter matches --reason (a comma-separated list; empty: all).
func reasonFilter(s string) func(string) bool {
	if s == "" {
		return func(string) bool { return true }
	}
	want := map[string]bool{}
	for _, r := range strings.Split(s, ",") {
		want[strings.TrimSpace(r)] = true
	}
	return func(r string) bool { return want[r] }
}

func (c *cli) dlq(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("dlq: want a subcommand: list or replay")
	}
	switch args[0] {
	case "list", "ls":
		return c.dlqList(ctx, args[1:])
	case "replay":
		return c.dlqReplay(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stdout, usage)
		return nil
	}
	return usageErr("dlq: unknown subcommand %q: want list or replay", args[0])
}

// dlqStart reads the configuration and, within ctx, the DLQ topic's
// partitions up to their end offsets now: what both dlq commands start from.
func (c *cli) dlqStart(ctx context.Context) (*config, map[int32]span, error) {
	cfg, err := c.dlqConfig()
	if err != nil {
		return nil, nil, err
	}
	admin, err := cfg.kafkaClient()
	if err != nil {
		return nil, nil, err
	}
	defer admin.Close()
	spans, err := dlqSpans(ctx, admin, cfg.dlq)
	if err != nil {
		return nil, nil, err
	}
	return cfg, spans, nil
}

func (c *cli) dlqConfig() (*config, error) {
	cfg, err := c.loadConfig(needs{kafka: true})
	if err != nil {
		return nil, err
	}
	if cfg.dlq == "" {
		return nil, configErr(errors.New("KAFKA_DLQ_TOPIC: is empty (dead-lettering disabled): set it to the DLQ topic"))
	}
	return cfg, nil
}

// scanDLQ reads the DLQ topic's spans and calls f with each dead letter
// whose reason the --reason list matches (every letter when it is empty),
// after counting it: in read, and when it matches in matched and tally.
func scanDLQ(ctx context.Context, cfg *config, spans map[int32]span, reasons string, read, matched *int, tally reasonTally,
	f func(r *kgo.Record, d deadLetter) error) error {
	match := reasonFilter(reasons)
	return readDLQ(ctx, cfg, cfg.dlq, spans, func(r *kgo.Record) error {
		*read++
		d := letterOf(r, cfg)
		if !match(d.Reason) {
			return nil
		}
		*matched++
		tally.add(d)
		return f(r, d)
	})
}

// dlqListReport is `fleetctl dlq list -o json`.
type dlqListReport struct {
	Topic    string        `json:"topic"`
	Read     int           `json:"read"`    // records read (up to the end offsets captured at start)
	Matched  int           `json:"matched"` // records --reason matched
	ByReason []reasonCount `json:"byReason"`
	Letters  []deadLetter  `json:"letters"` // the --limit oldest (by dead-letter time)
}

type reasonCount struct {
	Reason     string `json:"reason"`
	Count      int    `json:"count"`
	Replayable int    `json:"replayable"`
	Truncated  int    `json:"truncated"`
}

type reasonTally map[string]*reasonCount

func (t reasonTally) add(d deadLetter) {
	rc := t[d.Reason]
	if rc == nil {
		rc = &reasonCount{Reason: d.Reason}
		t[d.Reason] = rc
	}
	rc.Count++
	if d.Replayable {
		rc.Replayable++
	}
	if d.Truncated {
		rc.Truncated++
	}
}

func (t reasonTally) sorted() []reasonCount {
	out := []reasonCount{}
	for _, rc := range t {
		out = append(out, *rc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}

func (c *cli) dlqList(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("dlq list", "dlq list [--reason R[,R…]] [--limit N] [--show-values [--value-bytes N]] [-o json]",
		&o, 2*time.Minute)
	reason := fs.String("reason", "", "only dead letters with this reason (comma-separated list)")
	limit := fs.Int("limit", 100, "show at most N dead letters (0: all)")
	showValues := fs.Bool("show-values", false, "also print record values (cut to --value-bytes)")
	valueBytes := fs.Int("value-bytes", 256, "with --show-values, print at most this many bytes of each value")
	if _, err := parse(fs, &o, args, 0); err != nil {
		return err
	}
	if *limit < 0 || *valueBytes < 1 {
		return usageErr("--limit must not be negative and --value-bytes must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cfg, spans, err := c.dlqStart(ctx)
	if err != nil {
		return err
	}
	rep := dlqListReport{Topic: cfg.dlq, Letters: []deadLetter{}}
	tally := reasonTally{}
	err = scanDLQ(ctx, cfg, spans, *reason, &rep.Read, &rep.Matched, tally, func(r *kgo.Record, d deadLetter) error {
		if *showValues {
			v := printable(r.Value[:min(len(r.Value), *valueBytes)])
			if len(r.Value) > *valueBytes {
				v += "…"
			}
			d.Value = &v
		}
		rep.Letters = append(rep.Letters, d)
		return nil
	})
	if err != nil {
		return err
	}
	rep.ByReason = tally.sorted()
	sortLetters(rep.Letters)
	if *limit > 0 && len(rep.Letters) > *limit {
		rep.Letters = rep.Letters[:*limit]
	}
	if o.json() {
		return writeJSON(c.stdout, rep)
	}
	printLetters(c.stdout, rep.Letters, *showValues)
	fmt.Fprintf(c.stdout, "%d of %d dead letters in %s matched (read up to the end offsets at start)",
		rep.Matched, rep.Read, cfg.dlq)
	if len(rep.Letters) < rep.Matched {
		fmt.Fprintf(c.stdout, "; showing the %d oldest (--limit 0 for all)", len(rep.Letters))
	}
	fmt.Fprintln(c.stdout)
	printReasons(c.stdout, rep.ByReason)
	return nil
}

func sortLetters(ls []deadLetter) {
	sort.SliceStable(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if !time.Time(a.Time).Equal(time.Time(b.Time)) {
			return time.Time(a.Time).Before(time.Time(b.Time))
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
}

func printLetters(w io.Writer, ls []deadLetter, values bool) {
	if len(ls) == 0 {
		return
	}
	header := []string{"DLQ", "TIME", "REASON", "SOURCE", "KEY", "SIZE", "ERROR"}
	if values {
		header = append(header, "VALUE")
	}
	t := newTable(w, header...)
	for _, d := range ls {
		src := d.SourceTopic
		if d.SourcePartition != nil && d.SourceOffset != nil {
			src += fmt.Sprintf("/%d@%d", *d.SourcePartition, *d.SourceOffset)
		}
		size := strconv.Itoa(d.ValueBytes) + truncationNote(d)
		row := []string{fmt.Sprintf("%d@%d", d.Partition, d.Offset), stamp(time.Time(d.Time)), d.Reason, src,
			clip(d.Key, 40), size, clip(d.Error, 70)}
		if values {
			v := ""
			if d.Value != nil {
				v = *d.Value
			}
			row = append(row, v)
		}
		t.row(row...)
	}
	t.flush()
}

// truncationNote says what of a letter's record was cut, for the SIZE
// column: " (truncated from 2000000)", " (key, headers cut)".
func truncationNote(d deadLetter) string {
	if !d.Truncated {
		return ""
	}
	var notes, others []string
	for _, p := range d.TruncatedParts {
		if p != "value" {
			others = append(others, p)
		} else if d.OriginalBytes > 0 {
			notes = append(notes, fmt.Sprintf("truncated from %d", d.OriginalBytes))
		} else {
			others = append(others, p)
		}
	}
	if len(others) > 0 {
		notes = append(notes, strings.Join(others, ", ")+" cut")
	}
	if len(notes) == 0 {
		notes = append(notes, "truncated")
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

func printReasons(w io.Writer, rs []reasonCount) {
	if len(rs) == 0 {
		return
	}
	t := newTable(w, "REASON", "COUNT", "REPLAYABLE", "TRUNCATED")
	for _, r := range rs {
		t.row(r.Reason, strconv.Itoa(r.Count), strconv.Itoa(r.Replayable), strconv.Itoa(r.Truncated))
	}
	t.flush()
}

// replayReport is `fleetctl dlq replay -o json`.
type replayReport struct {
	Topic      string `json:"topic"`
	Read       int    `json:"read"`
	Matched    int    `json:"matched"`
	Replayable int    `json:"replayable"`
	Skipped    int    `json:"skipped"`          // matched but not replayable
	Truncated  int    `json:"skippedTruncated"` // of which truncated when dead-lettered
	// RefusedTopic counts the skipped letters whose source topic is not a
	// job topic (refused: never produced there); ByRefusedTopic names them.
	RefusedTopic   int           `json:"refusedTopic"`
	ByRefusedTopic []topicCount  `json:"byRefusedTopic,omitempty"`
	ByReason       []reasonCount `json:"byReason"`
	ByTopic        []topicCount  `json:"byTopic"` // replayable letters per source topic
	DryRun         bool          `json:"dryRun"`
	Replayed       int           `json:"replayed"`
	WouldReplay    []deadLetter  `json:"wouldReplay,omitempty"` // with --dry-run
	Note           string        `json:"note"`
}

type topicCount struct {
	Topic string `json:"topic"`
	Count int    `json:"count"`
}

const idempotenceNote = kafkaview.IdempotenceNote

// topicCounts lists counts per topic, by topic name.
func topicCounts(m map[string]int) []topicCount {
	var out []topicCount
	for t, n := range m {
		out = append(out, topicCount{Topic: t, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

func (c *cli) dlqReplay(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("dlq replay", "dlq replay [--reason R[,R…]] [--dry-run] [--yes] [-o json]", &o, 5*time.Minute)
	reason := fs.String("reason", "", "only dead letters with this reason (comma-separated list)")
	dry := fs.Bool("dry-run", false, "print what would be replayed; produce nothing")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if _, err := parse(fs, &o, args, 0); err != nil {
		return err
	}
	if o.json() && !*yes && !*dry {
		return usageErr("dlq replay -o json needs --yes or --dry-run (it cannot ask for confirmation)")
	}
	readCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cfg, spans, err := c.dlqStart(readCtx)
	if err != nil {
		return err
	}

	// Pass 1 (kafkaview.Replayer.Choose): count, and remember exactly which
	// letters to replay.
	rep := replayReport{Topic: cfg.dlq, DryRun: *dry, Note: idempotenceNote}
	rp := kafkaview.Replayer{DLQ: cfg.dlq, Jobs: cfg.replayJobTopics(), NewClient: cfg.kafkaClient}
	tally := reasonTally{}
	match := reasonFilter(*reason)
	choice, err := rp.Choose(readCtx, spans, func(_ *kgo.Record, l intake.Letter) bool { return match(l.Reason) },
		func(r *kgo.Record, v kafkaview.Verdict) error {
			d := letterFrom(r, v)
			tally.add(d)
			if d.Replayable && *dry {
				rep.WouldReplay = append(rep.WouldReplay, d)
			}
			return nil
		})
	if err != nil {
		return err
	}
	rep.Read, rep.Matched, rep.Replayable, rep.Skipped = choice.Read, choice.Matched, choice.Replayable, choice.Skipped
	rep.Truncated, rep.RefusedTopic = choice.Truncated, choice.RefusedTopic
	rep.ByReason = tally.sorted()
	rep.ByTopic, rep.ByRefusedTopic = topicCounts(choice.ByTopic), topicCounts(choice.ByRefusedTopic)
	sortLetters(rep.WouldReplay)

	out := c.stdout
	if o.json() {
		out = io.Discard
	}
	fmt.Fprintf(out, "%d of %d dead letters in %s matched (read up to the end offsets at start)\n", rep.Matched, rep.Read, cfg.dlq)
	printReasons(out, rep.ByReason)
	if rep.Truncated > 0 {
		fmt.Fprintf(out, "skipping %s: not replayable, the record was cut when dead-lettered and the original "+
			"cannot be rebuilt from the DLQ\n", plural(int64(rep.Truncated), "truncated letter", "truncated letters"))
	}
	if rep.RefusedTopic > 0 {
		fmt.Fprintf(out, "refusing %s whose source topic is not a job topic (%s): a dead letter goes back only "+
			"into the job topics (KAFKA_TOPICS / KAFKA_TOPIC_REGEX); its dlq-source-topic header may be forged\n",
			plural(int64(rep.RefusedTopic), "letter", "letters"), jobTopicsText(cfg))
		for _, tc := range rep.ByRefusedTopic {
			fmt.Fprintf(out, "  refused %s: %d\n", quoteTopic(tc.Topic), tc.Count)
		}
	}
	if n := rep.Skipped - rep.Truncated - rep.RefusedTopic; n > 0 {
		fmt.Fprintf(out, "skipping %s without a usable %s header\n", plural(int64(n), "letter", "letters"),
			intake.HeaderSourceTopic)
	}
	for _, tc := range rep.ByTopic {
		fmt.Fprintf(out, "to %s: %d\n", tc.Topic, tc.Count)
	}
	fmt.Fprintln(out, "note:", idempotenceNote)

	switch {
	case *dry:
		printLetters(out, rep.WouldReplay, false)
		fmt.Fprintf(out, "dry run: %s would be replayed; nothing produced\n", plural(int64(rep.Replayable), "letter", "letters"))
		return c.replayDone(o, rep, nil)
	case rep.Replayable == 0:
		fmt.Fprintln(out, "nothing to replay")
		return c.replayDone(o, rep, nil)
	case !*yes:
		fmt.Fprintf(c.stdout, "Replay %s to their source topics? Type \"yes\" to continue: ",
			plural(int64(rep.Replayable), "dead letter", "dead letters"))
		if !c.confirm(ctx) {
			fmt.Fprintln(c.stdout)
			return &exitError{code: 1, msg: "not confirmed: nothing replayed"}
		}
	}

	// Pass 2 (kafkaview.Replayer.Produce): re-read the same spans and
	// produce the chosen letters.
	prodCtx, cancel2 := context.WithTimeout(ctx, o.timeout)
	defer cancel2()
	rep.Replayed, err = rp.Produce(prodCtx, choice)
	if err != nil {
		return c.replayDone(o, rep, fmt.Errorf("replayed %d of %d before failing (replaying again is safe): %w",
			rep.Replayed, rep.Replayable, err))
	}
	fmt.Fprintf(out, "replayed %s\n", plural(int64(rep.Replayed), "dead letter", "dead letters"))
	return c.replayDone(o, rep, nil)
}

// jobTopicsText names the configured job topics for a message.
func jobTopicsText(cfg *config) string {
	if cfg.topicRegex != "" {
		return "KAFKA_TOPIC_REGEX " + strconv.Quote(cfg.topicRegex)
	}
	return strings.Join(cfg.topics, ", ")
}

// confirm reads one line from stdin and reports whether it is "yes". An
// interrupt (ctx) while waiting counts as no; the reading goroutine then
// stays blocked on stdin, which only happens when the process is about to
// exit.
func (c *cli) confirm(ctx context.Context) bool {
	answer := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(c.stdin).ReadString('\n')
		answer <- s
	}()
	select {
	case s := <-answer:
		return strings.TrimSpace(s) == "yes"
	case <-ctx.Done():
		return false
	}
}

func (c *cli) replayDone(o common, rep replayReport, err error) error {
	if o.json() {
		if jerr := writeJSON(c.stdout, rep); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}
