package bench

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
)

// Vendors the bench can hold jobs on: those whose operation is a long
// query (CB EDR Live Response is a triage session on named sensors).
var Vendors = []string{"cbc", "sophos", "cytomic"}

var vendorKind = map[string]string{
	"cbc":     edr.KindCBCEventExport,
	"sophos":  edr.KindSophosXDR,
	"cytomic": edr.KindCytomicOSQuery,
}

// envPrefix is the prefix of a vendor's worker variables.
var envPrefix = map[string]string{"cbc": "CBC_", "cblr": "CBLR_", "sophos": "SOPHOS_", "cytomic": "CYTOMIC_"}

// Group is one kind of job in a Mix: a job of the group runs one task per
// vendor of the group.
type Group struct {
	Vendors []string
	Weight  int
}

// Mix is the vendor mix: jobs are dealt to its groups by weight. The
// default is every job a CB Cloud export.
type Mix []Group

// DefaultMix is every job a CB Cloud export.
var DefaultMix = Mix{{Vendors: []string{"cbc"}, Weight: 1}}

// ParseMix reads a mix: comma-separated groups, each vendors joined by '+'
// with an optional "=weight" (default 1). "cbc" is every job a CB Cloud
// export; "cbc+sophos" every job both; "cbc=3,sophos=1" three CB Cloud
// jobs for each Sophos one.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		vs, w, hasW := strings.Cut(g, "=")
		grp := Group{Weight: 1}
		if hasW {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("mix %q: weight %q is not a positive integer", s, w)
			}
			grp.Weight = n
		}
		for _, v := range strings.Split(vs, "+") {
			v = strings.ToLower(strings.TrimSpace(v))
			if !slices.Contains(Vendors, v) {
				return nil, fmt.Errorf("mix %q: vendor %q: one of %s", s, v, strings.Join(Vendors, ", "))
			}
			if slices.Contains(grp.Vendors, v) {
				return nil, fmt.Errorf("mix %q: vendor %q twice in one group", s, v)
			}
			grp.Vendors = append(grp.Vendors, v)
		}
		m = append(m, grp)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("mix %q: no vendor", s)
	}
	return m, nil
}

func (m Mix) String() string {
	var parts []string
	for _, g := range m {
		p := strings.Join(g.Vendors, "+")
		if len(m) > 1 {
			p += "=" + strconv.Itoa(g.Weight)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}

// group returns the group of job i: the groups in turn, each as many times
// as its weight.
func (m Mix) group(i int) int {
	total := 0
	for _, g := range m {
		total += g.Weight
	}
	k := i % total
	for gi, g := range m {
		if k < g.Weight {
			return gi
		}
		k -= g.Weight
	}
	return len(m) - 1
}

// expected returns how many of n jobs run a task of each vendor.
func (m Mix) expected(n int) map[string]int {
	out := map[string]int{}
	for i := range n {
		for _, v := range m[m.group(i)].Vendors {
			out[v]++
		}
	}
	return out
}

// vendors returns the vendors the mix uses, in Vendors order.
func (m Mix) vendors() []string {
	var out []string
	for _, v := range Vendors {
		for _, g := range m {
			if slices.Contains(g.Vendors, v) {
				out = append(out, v)
				break
			}
		}
	}
	return out
}

// groupType is the classification type the jobs of group gi carry: the
// playbook plans each group's tasks by it.
func groupType(gi int) string { return fmt.Sprintf("BENCH%d", gi) }

// playbook returns the PLAYBOOK_FILE that plans each group's tasks.
func (m Mix) playbook() []byte {
	type task struct {
		Kind  string   `json:"kind"`
		Types []string `json:"types,omitempty"`
	}
	var tasks []task
	for _, v := range m.vendors() {
		t := task{Kind: vendorKind[v]}
		if len(m) > 1 {
			for gi, g := range m {
				if slices.Contains(g.Vendors, v) {
					t.Types = append(t.Types, groupType(gi))
				}
			}
		}
		tasks = append(tasks, t)
	}
	b, _ := json.Marshal(map[string]any{"tasks": tasks})
	return b
}
