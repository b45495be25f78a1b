package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/state"
)

// TestMain is the only one of package worker: tests added to this package
// later share it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	kindCBC     = edr.KindCBCEventExport
	kindSophos  = edr.KindSophosXDR
	kindCytomic = edr.KindCytomicOSQuery
	kindCBLR    = edr.KindCBLRTriage
)

func pbMsg(platform, typ string) *job.Message {
	return &job.Message{
		JobID:          "12345678-1234-1234-1234-123456789abc",
		Classification: job.Classification{Platform: platform, Type: typ},
	}
}

func configuredSet(kinds ...string) func(string) bool {
	set := map[string]bool{}
	for _, k := range kinds {
		set[k] = true
	}
	return func(k string) bool { return set[k] }
}

func plannedKinds(plan []state.PlannedTask) []string {
	var out []string
	for _, p := range plan {
		out = append(out, p.Kind)
	}
	return out
}

func TestDefaultPlaybookIsValid(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultPlaybook().Validate())
}

func TestDefaultPlaybookPlans(t *testing.T) {
	t.Parallel()
	all := configuredSet(kindCBC, kindSophos, kindCytomic, kindCBLR)
	sensors := []int64{1001}
	for _, c := range []struct {
		name       string
		platform   string
		sensors    []int64
		configured func(string) bool
		want       []string
	}{
		{"win with sensors, all configured", "win", sensors, all, []string{kindCBC, kindSophos, kindCytomic, kindCBLR}},
		{"win without sensors", "win", nil, all, []string{kindCBC, kindSophos, kindCytomic}},
		{"WIN upper-case", "WIN", sensors, all, []string{kindCBC, kindSophos, kindCytomic, kindCBLR}},
		{"linux", "linux", nil, all, []string{kindCBC, kindSophos}},
		{"linux with sensors", "linux", sensors, all, []string{kindCBC, kindSophos, kindCBLR}},
		{"osx", "osx", nil, all, []string{kindCBC, kindSophos}},
		{"no platform", "", nil, all, []string{kindCBC, kindSophos}},
		{"only sophos configured", "win", sensors, configuredSet(kindSophos), []string{kindSophos}},
		{"cbc and cblr configured", "win", sensors, configuredSet(kindCBC, kindCBLR), []string{kindCBC, kindCBLR}},
		{"cytomic configured, linux", "linux", sensors, configuredSet(kindCytomic), nil},
		{"nothing configured", "win", sensors, configuredSet(), nil},
		{"unknown kinds configured", "win", sensors, configuredSet("cbc", "sophos", "edr.other"), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			plan := DefaultPlaybook().Plan(pbMsg(c.platform, "PE"), edr.Target{Sensors: c.sensors}, c.configured)
			require.Equal(t, c.want, plannedKinds(plan))
			for _, p := range plan {
				require.Zero(t, p.Timeout, "the default playbook leaves task timeouts to the job timeout")
			}
		})
	}
}

func TestDefaultPlaybookNeverPlansUnconfigured(t *testing.T) {
	t.Parallel()
	kinds := []string{kindCBC, kindSophos, kindCytomic, kindCBLR}
	// Every subset of configured vendors, every platform, with and without sensors.
	for mask := range 1 << len(kinds) {
		var conf []string
		for i, k := range kinds {
			if mask&(1<<i) != 0 {
				conf = append(conf, k)
			}
		}
		isConf := configuredSet(conf...)
		for _, platform := range []string{"win", "linux", "osx", "android", ""} {
			for _, sensors := range [][]int64{nil, {1}} {
				plan := DefaultPlaybook().Plan(pbMsg(platform, "PE"), edr.Target{Sensors: sensors}, isConf)
				for _, p := range plan {
					require.True(t, isConf(p.Kind), "planned unconfigured %s", p.Kind)
				}
				if isConf(kindCBC) {
					require.Contains(t, plannedKinds(plan), kindCBC, "cbc runs on every platform")
				}
			}
		}
	}
}

const exampleFile = `{"tasks": [
  {"kind": "cbc.event_export", "timeout": "4h"},
  {"kind": "sophos.xdr_query", "platforms": ["win", "linux"], "timeout": 7200},
  {"kind": "cytomic.osquery",  "platforms": ["win"], "timeout": 1.5},
  {"kind": "cblr.triage",      "requiresSensors": true, "types": ["PE"], "timeout": "90s"}
]}`

func TestParsePlaybook(t *testing.T) {
	t.Parallel()
	p, err := ParsePlaybook([]byte(exampleFile))
	require.NoError(t, err)
	require.Equal(t, []PlaybookTask{
		{Kind: kindCBC, Timeout: state.Duration(4 * time.Hour)},
		{Kind: kindSophos, Platforms: []string{"win", "linux"}, Timeout: state.Duration(2 * time.Hour)},
		{Kind: kindCytomic, Platforms: []string{"win"}, Timeout: state.Duration(1500 * time.Millisecond)},
		{Kind: kindCBLR, RequiresSensors: true, Types: []string{"PE"}, Timeout: state.Duration(90 * time.Second)},
	}, p.Tasks)

	plan := p.Plan(pbMsg("linux", "ELF"), edr.Target{Sensors: []int64{7}}, configuredSet(kindCBC, kindSophos, kindCytomic, kindCBLR))
	require.Equal(t, []state.PlannedTask{
		{Kind: kindCBC, Timeout: state.Duration(4 * time.Hour)},
		{Kind: kindSophos, Timeout: state.Duration(2 * time.Hour)},
	}, plan, "cytomic is win-only and cblr PE-only")
}

func TestParsePlaybookNoTimeout(t *testing.T) {
	t.Parallel()
	p, err := ParsePlaybook([]byte(`{"tasks":[{"kind":"sophos.xdr_query"}]}`))
	require.NoError(t, err)
	require.Zero(t, p.Tasks[0].Timeout)
}

func TestParsePlaybookErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		doc  string
		want string // substring of the error
	}{
		{"empty document", ``, "playbook"},
		{"not JSON", `tasks: [cbc]`, "playbook"},
		{"no tasks", `{"tasks": []}`, "no tasks"},
		{"empty object", `{}`, "no tasks"},
		{"null tasks", `{"tasks": null}`, "no tasks"},
		{"unknown top-level field", `{"tasks": [{"kind": "cbc.event_export"}], "version": 2}`, "version"},
		{"unknown task field", `{"tasks": [{"kind": "cbc.event_export", "timout": "4h"}]}`, "timout"},
		{"unknown kind", `{"tasks": [{"kind": "cbc.event_export"}, {"kind": "crowdstrike.rtr"}]}`, `task 1: unknown kind "crowdstrike.rtr"`},
		{"empty kind", `{"tasks": [{"timeout": "1h"}]}`, `unknown kind ""`},
		{"kind is case-sensitive", `{"tasks": [{"kind": "CBC.EVENT_EXPORT"}]}`, "unknown kind"},
		{"duplicate kind", `{"tasks": [{"kind": "sophos.xdr_query"}, {"kind": "cbc.event_export"}, {"kind": "sophos.xdr_query", "platforms": ["win"]}]}`, `task 2: kind "sophos.xdr_query" listed twice`},
		{"negative duration", `{"tasks": [{"kind": "cbc.event_export", "timeout": "-1h"}]}`, "negative timeout"},
		{"negative seconds", `{"tasks": [{"kind": "cbc.event_export", "timeout": -5}]}`, "negative timeout"},
		{"bad duration", `{"tasks": [{"kind": "cbc.event_export", "timeout": "4 hours"}]}`, "bad duration"},
		{"duration bool", `{"tasks": [{"kind": "cbc.event_export", "timeout": true}]}`, "duration"},
		{"platforms string", `{"tasks": [{"kind": "cbc.event_export", "platforms": "win"}]}`, "platforms"},
		{"tasks object", `{"tasks": {"kind": "cbc.event_export"}}`, "playbook"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePlaybook([]byte(c.doc))
			require.Error(t, err)
			require.Nil(t, p)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

func TestLoadPlaybook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "playbook.json")
	require.NoError(t, os.WriteFile(path, []byte(exampleFile), 0o600))
	p, err := LoadPlaybook(path)
	require.NoError(t, err)
	require.Len(t, p.Tasks, 4)

	_, err = LoadPlaybook(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(state.Duration(4 * time.Hour))
	require.NoError(t, err)
	require.JSONEq(t, `"4h0m0s"`, string(b))

	var d state.Duration
	require.NoError(t, json.Unmarshal(b, &d))
	require.Equal(t, state.Duration(4*time.Hour), d)
	require.NoError(t, json.Unmarshal([]byte(`30`), &d))
	require.Equal(t, state.Duration(30*time.Second), d)
	require.NoError(t, json.Unmarshal([]byte(`"1h30m"`), &d))
	require.Equal(t, state.Duration(90*time.Minute), d)
	require.Error(t, json.Unmarshal([]byte(`{}`), &d))
	require.Error(t, json.Unmarshal([]byte(`"soon"`), &d))

	// A state.PlannedTask survives the ledger round trip.
	pt := state.PlannedTask{Kind: kindCBC, Timeout: state.Duration(2*time.Hour + 3*time.Second)}
	b, err = json.Marshal(pt)
	require.NoError(t, err)
	var back state.PlannedTask
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, pt, back)
}

func TestPlanFilters(t *testing.T) {
	t.Parallel()
	p := &Playbook{Tasks: []PlaybookTask{
		{Kind: kindCBC, Platforms: []string{"*"}},
		{Kind: kindSophos, Platforms: []string{"Win", "LINUX"}, Timeout: state.Duration(time.Hour)},
		{Kind: kindCytomic, Types: []string{"pe", "Dll"}},
		{Kind: kindCBLR, Platforms: []string{"win"}, Types: []string{"*"}, RequiresSensors: true},
	}}
	require.NoError(t, p.Validate())
	all := configuredSet(kindCBC, kindSophos, kindCytomic, kindCBLR)
	for _, c := range []struct {
		name, platform, typ string
		sensors             []int64
		want                []string
	}{
		{"win PE with sensors", "win", "PE", []int64{1}, []string{kindCBC, kindSophos, kindCytomic, kindCBLR}},
		{"platform case-insensitive", "wIN", "pE", []int64{1}, []string{kindCBC, kindSophos, kindCytomic, kindCBLR}},
		{"linux ELF", "Linux", "ELF", []int64{1}, []string{kindCBC, kindSophos}},
		{"osx DLL", "osx", "DLL", nil, []string{kindCBC, kindCytomic}},
		{"empty classification", "", "", []int64{1}, []string{kindCBC}},
		{"no sensors", "win", "ELF", nil, []string{kindCBC, kindSophos}},
		{"filter is not a substring match", "windows", "PEX", []int64{1}, []string{kindCBC}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			plan := p.Plan(pbMsg(c.platform, c.typ), edr.Target{Sensors: c.sensors}, all)
			require.Equal(t, c.want, plannedKinds(plan))
			for _, pt := range plan {
				if pt.Kind == kindSophos {
					require.Equal(t, state.Duration(time.Hour), pt.Timeout)
				}
			}
		})
	}
}
