package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/state"
)

// Playbook maps a sample's classification to the tasks that hunt it. Only
// tasks whose vendor is configured are planned.
//
// An operator can replace the built-in playbook with a JSON file
// (PLAYBOOK_FILE):
//
//	{"tasks": [
//	  {"kind": "cbc.event_export", "timeout": "4h"},
//	  {"kind": "sophos.xdr_query", "platforms": ["win", "linux"], "timeout": "2h"},
//	  {"kind": "cytomic.osquery",  "platforms": ["win"]},
//	  {"kind": "cblr.triage",      "requiresSensors": true, "types": ["PE"]}
//	]}
//
// platforms and types filter on classification.platform and .type
// (case-insensitive; empty = any); requiresSensors plans the task only when
// the submission names CB EDR sensors; timeout bounds the task (default: the
// job timeout).
type Playbook struct {
	Tasks []PlaybookTask `json:"tasks"`
}

// PlaybookTask is one row of a Playbook.
type PlaybookTask struct {
	Kind            string         `json:"kind"`
	Platforms       []string       `json:"platforms,omitempty"`
	Types           []string       `json:"types,omitempty"`
	RequiresSensors bool           `json:"requiresSensors,omitempty"`
	Timeout         state.Duration `json:"timeout,omitempty"`
}

// DefaultPlaybook is DESIGN.md's playbook: CB Cloud and Sophos for every
// platform, Cytomic for Windows only (it answers 202 otherwise), Live
// Response only when the submission names sensors.
func DefaultPlaybook() *Playbook {
	return &Playbook{Tasks: []PlaybookTask{
		{Kind: edr.KindCBCEventExport},
		{Kind: edr.KindSophosXDR},
		{Kind: edr.KindCytomicOSQuery, Platforms: []string{"win"}},
		{Kind: edr.KindCBLRTriage, RequiresSensors: true},
	}}
}

var knownKinds = []string{edr.KindCBCEventExport, edr.KindSophosXDR, edr.KindCytomicOSQuery, edr.KindCBLRTriage}

// LoadPlaybook reads and validates a playbook file.
func LoadPlaybook(path string) (*Playbook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("playbook: %w", err)
	}
	return ParsePlaybook(b)
}

// ParsePlaybook parses and validates a playbook document.
func ParsePlaybook(b []byte) (*Playbook, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Playbook
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("playbook: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks every task kind is known and appears once.
func (p *Playbook) Validate() error {
	if len(p.Tasks) == 0 {
		return fmt.Errorf("playbook: no tasks")
	}
	seen := map[string]bool{}
	for i, t := range p.Tasks {
		if !slices.Contains(knownKinds, t.Kind) {
			return fmt.Errorf("playbook: task %d: unknown kind %q (known: %s)", i, t.Kind, strings.Join(knownKinds, ", "))
		}
		if seen[t.Kind] {
			return fmt.Errorf("playbook: task %d: kind %q listed twice", i, t.Kind)
		}
		if t.Timeout < 0 {
			return fmt.Errorf("playbook: task %d: negative timeout", i)
		}
		seen[t.Kind] = true
	}
	return nil
}

// Plan returns the tasks for msg among the configured kinds.
func (p *Playbook) Plan(msg *job.Message, t edr.Target, configured func(kind string) bool) []state.PlannedTask {
	var out []state.PlannedTask
	for _, pt := range p.Tasks {
		if !configured(pt.Kind) {
			continue
		}
		if !matches(pt.Platforms, msg.Classification.Platform) || !matches(pt.Types, msg.Classification.Type) {
			continue
		}
		if pt.RequiresSensors && len(t.Sensors) == 0 {
			continue
		}
		out = append(out, state.PlannedTask{Kind: pt.Kind, Timeout: pt.Timeout})
	}
	return out
}

func matches(filter []string, v string) bool {
	if len(filter) == 0 {
		return true
	}
	for _, f := range filter {
		if f == "*" || strings.EqualFold(f, v) {
			return true
		}
	}
	return false
}
