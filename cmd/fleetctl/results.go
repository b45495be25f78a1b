package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/results"
)

// resultsReport is `fleetctl results -o json`.
type resultsReport struct {
	Topic   string            `json:"topic"`
	Read    int               `json:"read"`    // records read
	Skipped int               `json:"skipped"` // records that are not summaries
	Results []results.Summary `json:"results"` // newest first
}

// results reads the result topic: the last summaries, or one job's.
func (c *cli) results(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("results", "results [--job ID] [--last N] [-o json]", &o, 2*time.Minute)
	jobID := fs.String("job", "", "only this job's summaries (reads the whole topic)")
	last := fs.Int("last", 20, "without --job: read the last N records of each partition and show the N newest")
	if _, err := parse(fs, &o, args, 0); err != nil {
		return err
	}
	if *last < 1 {
		return usageErr("--last must be positive")
	}
	cfg, err := c.loadConfig(needs{kafka: true})
	if err != nil {
		return err
	}
	if cfg.result == "" {
		return configErr(errors.New("KAFKA_RESULT_TOPIC: is empty (summaries disabled): set it to the result topic"))
	}
	want := ""
	if *jobID != "" {
		want = job.CanonicalID(*jobID)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	admin, err := cfg.kafkaClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	spans, err := topicSpans(ctx, admin, cfg.result, "result topic")
	if err != nil {
		return err
	}
	if want == "" {
		for p, s := range spans {
			s.Start = max(s.Start, s.End-int64(*last))
			spans[p] = s
		}
	}
	rep := resultsReport{Topic: cfg.result, Results: []results.Summary{}}
	err = readDLQ(ctx, cfg, cfg.result, spans, func(r *kgo.Record) error {
		rep.Read++
		var s results.Summary
		if err := json.Unmarshal(r.Value, &s); err != nil || s.JobID == "" {
			rep.Skipped++
			return nil
		}
		if want == "" || job.CanonicalID(s.JobID) == want {
			rep.Results = append(rep.Results, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.SliceStable(rep.Results, func(i, j int) bool { return rep.Results[i].Finished > rep.Results[j].Finished })
	if want == "" && len(rep.Results) > *last {
		rep.Results = rep.Results[:*last]
	}
	if o.json() {
		return writeJSON(c.stdout, rep)
	}
	printResults(c.stdout, rep)
	return nil
}

func printResults(w io.Writer, rep resultsReport) {
	t := newTable(w, "FINISHED", "JOB", "STATE", "WORKER", "TASKS", "ROWS", "SEEN ON", "FILES")
	for _, s := range rep.Results {
		var rows int64
		var hosts []string
		files, tasks := 0, make([]string, 0, len(s.Tasks))
		for _, ts := range s.Tasks {
			tasks = append(tasks, ts.Kind+"="+ts.State)
			if r := ts.Result; r != nil {
				rows += r.Rows
				hosts = append(hosts, r.Hosts...)
				files += len(r.Files)
			}
		}
		st := s.State
		if s.Reason != "" {
			st += ": " + s.Reason
		}
		t.row(stamp(time.UnixMilli(s.Finished)), s.JobID, st, dash(s.Worker), dash(strings.Join(tasks, " ")),
			strconv.FormatInt(rows, 10), dash(clipList(hosts, 3)), strconv.Itoa(files))
	}
	t.flush()
	fmt.Fprintf(w, "%d summaries shown from %s (%d records read", len(rep.Results), rep.Topic, rep.Read)
	if rep.Skipped > 0 {
		fmt.Fprintf(w, ", %d not summaries", rep.Skipped)
	}
	fmt.Fprintln(w, "); fleetctl job <id> shows one in full")
}
