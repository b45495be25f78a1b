package cytomic

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
)

// errorCode is one of the documented per-machine error codes.
type errorCode struct {
	name    string
	meaning string
	hint    string
}

// errorCodes are the codes of the source document's "Error Types" table.
var errorCodes = map[string]errorCode{
	"201": {"ErrorExecutingOsQuery", "error executing the OSQuery statement", "syntax or schema error; osquery 4.2.0 schema"},
	"202": {"ErrorOsNotSupported", "Operating system not supported", "OSQuery runs on Windows only"},
	"203": {"ErrorOsQueryNotInstalled", "OSQuery not installed", "needs Cytomic EDR 3.71 or later"},
}

// describeCode renders a machine error for analysts, e.g.
// "Cytomic 202 ErrorOsNotSupported: Operating system not supported".
func describeCode(code, vendorDesc string) string {
	vendorDesc = clip(vendorDesc, 120)
	c, known := errorCodes[code]
	switch {
	case known && vendorDesc != "" && !strings.EqualFold(vendorDesc, c.meaning):
		return fmt.Sprintf("Cytomic %s %s: %s (%s)", code, c.name, c.meaning, vendorDesc)
	case known:
		return fmt.Sprintf("Cytomic %s %s: %s (%s)", code, c.name, c.meaning, c.hint)
	case code == "":
		return "Cytomic error without code: " + orDefault(vendorDesc, "no description")
	}
	return fmt.Sprintf("Cytomic error %s: %s", clip(code, 20), orDefault(vendorDesc, "undocumented error code"))
}

func orDefault(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// codeCount counts machines that failed with one code.
type codeCount struct {
	code string
	desc string // the first vendor description seen
	n    int
}

// tally is what one round (/info and /state) says about a reference's
// operations.
type tally struct {
	ops      int
	machines int // machines known: the most the start answer, /info or the counters name
	answered int
	success  int
	partial  int
	failed   int
	codes    []*codeCount
	missing  []refOp // operations absent from both answers
	// settled: every operation has finished. The source document's rule is
	// the /state counters: totalOperationElements equals totalSuccess +
	// totalPartiallySucceeded + totalError once every machine answered.
	// /info's per-machine statuses are the fallback when the counters are
	// absent or zero.
	settled bool
}

// emptyGrace is how long an operation whose counters and /info both name no
// machine at all is given before it counts as finished (a client without
// machines), so a slow start of the counters is not taken for an empty
// answer.
const emptyGrace = time.Minute

// tallyRound reads one round's answers for ref. state may be nil (a round
// that asked /info only); now decides emptyGrace.
func tallyRound(ref reference, info map[string]infoOp, state map[string]stateOp, now time.Time) tally {
	t := tally{ops: len(ref.Ops), settled: true}
	for _, op := range ref.Ops {
		entry, inInfo := info[op.OperationID.text]
		st, inState := state[op.OperationID.text]
		if !inInfo && !inState {
			t.missing = append(t.missing, op)
			t.machines += op.Machines
			t.settled = false
			continue
		}
		var success, partial, failed, pending int
		for _, m := range entry.Info {
			switch parseStatus(string(m.Status)) {
			case machineSuccess:
				success++
			case machinePartial:
				partial++
			case machineError:
				failed++
				t.addCode(string(m.ErrorCode), string(m.ErrorDescription))
			default:
				pending++
			}
		}
		c := st.Counters
		t.machines += max(len(entry.Info), op.Machines, int(c.Total))
		t.success += max(success, int(c.Success))
		t.partial += max(partial, int(c.Partial))
		t.failed += max(failed, int(c.Error))

		var done bool
		switch {
		case c.Total > 0: // the documented rule
			done = c.answered() >= int64(c.Total)
		case len(entry.Info) > 0:
			done = pending == 0 && len(entry.Info) >= op.Machines
		default: // nobody names a machine yet
			done = inState && c.answered() == 0 && op.Machines == 0 &&
				now.Sub(time.UnixMilli(ref.StartedAt)) >= emptyGrace
		}
		if !done {
			t.settled = false
		}
	}
	t.answered = t.success + t.partial + t.failed
	return t
}

func (t *tally) addCode(code, desc string) {
	code = strings.TrimSpace(code)
	for _, c := range t.codes {
		if c.code == code {
			c.n++
			return
		}
	}
	t.codes = append(t.codes, &codeCount{code: code, desc: desc, n: 1})
}

// lost fails when operations are still unknown to Cytomic well after Start.
func (t tally) lost(ref reference, now time.Time, op string) error {
	if len(t.missing) == 0 || now.Sub(time.UnixMilli(ref.StartedAt)) < unknownGrace {
		return nil
	}
	ids := make([]string, len(t.missing))
	for i, m := range t.missing {
		ids[i] = m.OperationID.text
	}
	return edr.Permanent(vendor, op, fmt.Sprintf(
		"Cytomic does not know operation(s) %s (expired, deleted, or started with other credentials)", strings.Join(ids, ", ")))
}

// allFailed returns the permanent task failure when every machine of every
// operation ended in Error.
func (t tally) allFailed(op string) error {
	if t.machines == 0 || t.failed < t.machines || len(t.missing) > 0 {
		return nil
	}
	if len(t.codes) == 0 { // the counters say so; /info named no code
		return &edr.Error{Vendor: vendor, Op: op, Msg: fmt.Sprintf(
			"every machine failed (all %s; Cytomic reported no error code)", plural(t.machines, "machine"))}
	}
	sorted := slices.Clone(t.codes)
	slices.SortStableFunc(sorted, func(a, b *codeCount) int { return b.n - a.n })
	parts := make([]string, len(sorted))
	for i, c := range sorted {
		parts[i] = fmt.Sprintf("%s [%s]", describeCode(c.code, c.desc), plural(c.n, "machine"))
	}
	msg := "every machine failed: " + strings.Join(parts, "; ")
	if len(sorted) == 1 {
		msg = fmt.Sprintf("%s (all %s)", describeCode(sorted[0].code, sorted[0].desc), plural(t.machines, "machine"))
	}
	return &edr.Error{Vendor: vendor, Op: op, Code: sorted[0].code, Msg: msg}
}

func (t tally) progress(ttlOver bool) string {
	s := fmt.Sprintf("%d/%d machines answered", t.answered, t.machines)
	if t.failed > 0 || t.partial > 0 {
		s += fmt.Sprintf(" (%d failed, %d partial)", t.failed, t.partial)
	}
	s += fmt.Sprintf(" in %s", plural(t.ops, "operation"))
	if len(t.missing) > 0 {
		s += fmt.Sprintf("; %d not reported by Cytomic yet", len(t.missing))
	}
	if ttlOver {
		s += "; operation TTL reached"
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// accumulator merges the result files of a reference's operations.
type accumulator struct {
	rows        int64
	hosts       map[string]string
	counters    map[string]counters
	noHostFiles int
}

func newAccumulator() *accumulator {
	return &accumulator{hosts: map[string]string{}, counters: map[string]counters{}}
}

func (a *accumulator) add(f fileSummary) {
	a.rows += f.Rows
	if f.HostColumn < 0 && f.Rows > 0 {
		a.noHostFiles++
	}
	for k, v := range f.Hosts {
		if _, ok := a.hosts[k]; !ok {
			a.hosts[k] = v
		}
	}
}

// result builds the edr.Result, with notes on failed, partial and silent
// machines.
func (a *accumulator) result(t tally, ttlOver bool) edr.Result {
	res := edr.Result{Rows: a.rows, HostsTotal: len(a.hosts)}
	for _, h := range a.hosts {
		res.Hosts = append(res.Hosts, h)
	}
	slices.SortFunc(res.Hosts, func(x, y string) int { return strings.Compare(strings.ToLower(x), strings.ToLower(y)) })
	if len(res.Hosts) > edr.MaxListed {
		res.Hosts = res.Hosts[:edr.MaxListed]
	}

	var total, answered int64
	for _, c := range a.counters {
		total += int64(c.Total)
		answered += c.answered()
	}
	if total == 0 { // counters absent: rely on /info
		total, answered = int64(t.machines), int64(t.answered)
	}
	total = max(total, int64(t.machines))

	if t.failed > 0 {
		parts := make([]string, len(t.codes))
		for i, c := range t.codes {
			parts[i] = fmt.Sprintf("%d× %s", c.n, describeCode(c.code, c.desc))
		}
		if len(parts) == 0 {
			parts = []string{"Cytomic reported no error code"}
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d machines failed: %s", t.failed, total, strings.Join(parts, "; ")))
	}
	if t.partial > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d machines returned partial results (PartiallySucceeded)", t.partial, total))
	}
	if silent := total - max(answered, int64(t.answered)); silent > 0 {
		if ttlOver {
			res.Notes = append(res.Notes, fmt.Sprintf("%d of %d machines never answered before the operation TTL", silent, total))
		} else {
			res.Notes = append(res.Notes, fmt.Sprintf("%d of %d machines had not answered when the results were collected", silent, total))
		}
	}
	if a.noHostFiles > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d result file(s) had no host column: hosts unknown for their rows", a.noHostFiles))
	}
	if total == 0 {
		res.Notes = append(res.Notes, "the configured Cytomic clients have no machines")
	}
	return res
}
