package cytomic

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

func TestDecodeInfoTolerant(t *testing.T) {
	t.Parallel()
	body := `[
	  {"panda": 1001, "operationId": 98765, "extra": {"x": 1}, "info": [
	    {"MUID": "A", "status": "SUCCESS"},
	    {"MUID": 17, "status": "partially_succeeded"},
	    {"MUID": "C", "status": "Error", "errorCode": "202", "errorDescription": "Operating system not supported"},
	    {"MUID": "D", "status": "error", "errorCode": 203},
	    {"MUID": "E", "status": "Pending", "errorCode": null},
	    {"MUID": "F", "status": "SomethingNew"}
	  ]},
	  {"pandaID": "1002", "operationId": "op-2", "info": []}
	]`
	got, err := decodeInfo([]byte(body))
	require.NoError(t, err)
	require.Len(t, got, 2)
	op := got["98765"]
	require.True(t, op.OperationID.num)
	require.Equal(t, "1001", op.Panda.text)
	want := []machineStatus{machineSuccess, machinePartial, machineError, machineError, machinePending, machinePending}
	for i, m := range op.Info {
		require.Equal(t, want[i], parseStatus(string(m.Status)), "machine %d", i)
	}
	require.Equal(t, "202", string(op.Info[2].ErrorCode))
	require.Equal(t, "203", string(op.Info[3].ErrorCode))
	require.Equal(t, "17", op.Info[1].MUID.text)
	require.Equal(t, "1002", got["op-2"].PandaID.text)

	one, err := decodeInfo([]byte(`{"operationId": "solo", "info": [{"MUID": "A", "status": "Success"}]}`))
	require.NoError(t, err, "a lone object is a list of one")
	require.Contains(t, one, "solo")
	none, err := decodeInfo([]byte(`null`))
	require.NoError(t, err)
	require.Empty(t, none)
}

func TestDecodersAreStrictWhereTheDocumentIsExplicit(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not JSON":        `{"data": [ {"id": "trunc`,
		"a string":        `"hello"`,
		"no operationId":  `[{"panda": 1, "info": []}]`,
		"id is an object": `[{"operationId": {"a": 1}}]`,
		"html error page": `<html>502 Bad Gateway</html>`,
	} {
		_, err := decodeInfo([]byte(body))
		require.ErrorIs(t, err, errMalformed, "info: "+name)
		_, err = decodeState([]byte(body))
		require.ErrorIs(t, err, errMalformed, "state: "+name)
		_, err = decodeStart([]byte(body))
		require.ErrorIs(t, err, errMalformed, "start: "+name)
	}
	_, err := decodeInfo([]byte(`[{"operationId": "x", "info": "nope"}]`))
	require.ErrorIs(t, err, errMalformed, "info must be a list")
	_, err = decodeState([]byte(`[{"operationId": "x", "counters": {"totalSuccess": "many"}}]`))
	require.ErrorIs(t, err, errMalformed, "counters are counts")
	_, err = decodeStart([]byte(`[{"pandaID": "1001", "MUIDs": []}]`))
	require.ErrorIs(t, err, errMalformed)
	require.Contains(t, err.Error(), "no operationId")
}

// TestEmptyBodyIsAnEmptyList: the public client accepts 204 No Content from
// every call; an empty body says nothing about any operation.
func TestEmptyBodyIsAnEmptyList(t *testing.T) {
	t.Parallel()
	for _, body := range []string{``, " \n", `null`, `[]`} {
		info, err := decodeInfo([]byte(body))
		require.NoError(t, err, "%q", body)
		require.Empty(t, info)
		state, err := decodeState([]byte(body))
		require.NoError(t, err, "%q", body)
		require.Empty(t, state)
		start, err := decodeStart([]byte(body))
		require.NoError(t, err, "%q", body)
		require.Empty(t, start)
	}
}

func TestCheckTokens(t *testing.T) {
	t.Parallel()
	for body, ok := range map[string]bool{
		`{"url":"0123456789"}`:              true,
		`{"url":"01234567890"}`:             false,
		`{"0123456789a":1}`:                 false,
		`[12345678901]`:                     false,
		`[1234567890, 1234567890]`:          true,
		`["\"\"\"\"\"", true, null]`:        true,
		`"` + strings.Repeat(`\\`, 6) + `"`: false, // 12 bytes as written
	} {
		err := checkTokens([]byte(body), 10)
		if ok {
			require.NoError(t, err, body)
		} else {
			require.ErrorIs(t, err, errTokenTooLong, body)
			require.ErrorContains(t, err, "longer than 10 bytes", body)
		}
	}
}

func TestDecodeState(t *testing.T) {
	t.Parallel()
	got, err := decodeState([]byte(`[{"panda": "1001", "operationId": 5, "url": " https://x.example/f?sig=1 ",
		"counters": {"totalOperationElements": "10", "totalSuccess": 6, "totalPartiallySucceeded": 1, "totalError": 2, "other": 9}}]`))
	require.NoError(t, err)
	op := got["5"]
	require.Equal(t, "https://x.example/f?sig=1", op.URL)
	require.Equal(t, counters{Total: 10, Success: 6, Partial: 1, Error: 2}, op.Counters)
	require.Equal(t, int64(9), op.Counters.answered())
}

func TestDecodeStart(t *testing.T) {
	t.Parallel()
	ops, err := decodeStart([]byte(`[{"pandaID": 1001, "operationId": "a-1", "MUIDs": ["m1", 2]}, {"pandaID": "1002", "operationId": 77}]`))
	require.NoError(t, err)
	require.Len(t, ops, 2)
	require.Len(t, ops[0].MUIDs, 2)
	require.Equal(t, "77", ops[1].OperationID.text)
	empty, err := decodeStart([]byte(`[]`))
	require.NoError(t, err)
	require.Empty(t, empty)
}

func TestDecodeToken(t *testing.T) {
	t.Parallel()
	tok, err := decodeToken([]byte(`{"access_token": "abc", "token_type": "Bearer", "expires_in": "3600", "scope": "x"}`))
	require.NoError(t, err)
	require.Equal(t, "abc", tok.AccessToken)
	require.Equal(t, flexInt(3600), tok.ExpiresIn)
	_, err = decodeToken([]byte(`{"token_type": "bearer"}`))
	require.ErrorIs(t, err, errMalformed)
	_, err = decodeToken([]byte(`{"access_token": "abc", "token_type": "mac"}`))
	require.ErrorIs(t, err, errMalformed)
	_, err = decodeToken([]byte(`<html>`))
	require.ErrorIs(t, err, errMalformed)
	noExpiry, err := decodeToken([]byte(`{"access_token": "abc"}`))
	require.NoError(t, err)
	require.Zero(t, noExpiry.ExpiresIn)
}

func TestOpIDKeepsItsJSONType(t *testing.T) {
	t.Parallel()
	var ids []opID
	require.NoError(t, json.Unmarshal([]byte(`[123456789012345678901, "abc", " spaced ", null]`), &ids))
	out, err := json.Marshal(ids)
	require.NoError(t, err)
	require.Equal(t, `[123456789012345678901,"abc","spaced",""]`, string(out), "large numbers keep every digit")
	require.Equal(t, `[{"operationId":123456789012345678901},{"operationId":"abc"}]`, mustJSON(t, opList(ids[:2])))
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]machineStatus{
		"Pending": machinePending, "": machinePending, "Running": machinePending,
		"Success": machineSuccess, "success": machineSuccess,
		"PartiallySucceeded": machinePartial, "PARTIALLY-SUCCEEDED": machinePartial,
		"Error": machineError, "ERROR": machineError, "failed": machineError,
	} {
		require.Equal(t, want, parseStatus(in), in)
	}
}

func TestDescribeCode(t *testing.T) {
	t.Parallel()
	require.Equal(t, "Cytomic 202 ErrorOsNotSupported: Operating system not supported (OSQuery runs on Windows only)",
		describeCode("202", "Operating system not supported"))
	require.Equal(t, `Cytomic 201 ErrorExecutingOsQuery: error executing the OSQuery statement (near "name": syntax error)`,
		describeCode("201", `near "name": syntax error`))
	require.Equal(t, "Cytomic 203 ErrorOsQueryNotInstalled: OSQuery not installed (needs Cytomic EDR 3.71 or later)",
		describeCode("203", ""))
	require.Equal(t, "Cytomic error 299: disk full", describeCode("299", "disk\nfull"))
	require.Equal(t, "Cytomic error without code: no description", describeCode("", ""))
	long := describeCode("299", strings.Repeat("x", 500))
	require.Less(t, len(long), 200, "vendor text is clipped")
}

func TestTallyAndNotes(t *testing.T) {
	t.Parallel()
	ref := reference{StartedAt: 1, TTL: 60, Ops: []refOp{
		{OperationID: opID{text: "a"}, Machines: 2},
		{OperationID: opID{text: "b"}, Machines: 1},
	}}
	info, err := decodeInfo([]byte(`[
	  {"operationId": "a", "info": [{"MUID": "1", "status": "Error", "errorCode": 202}, {"MUID": "2", "status": "Error", "errorCode": 202}]},
	  {"operationId": "b", "info": [{"MUID": "3", "status": "Pending"}]}]`))
	require.NoError(t, err)
	tl := tallyRound(ref, info, nil, time.UnixMilli(2))
	require.False(t, tl.settled)
	require.NoError(t, tl.allFailed("poll"), "one machine is still pending")

	info["b"] = infoOp{OperationID: opID{text: "b"}, Info: []machineInfo{{Status: "Error", ErrorCode: "203"}}}
	tl = tallyRound(ref, info, nil, time.UnixMilli(2))
	require.True(t, tl.settled)
	err = tl.allFailed("poll")
	var ee *edr.Error
	require.True(t, errors.As(err, &ee))
	require.Equal(t, "202", ee.Code)
	require.False(t, ee.Retryable)

	// Fewer machines reported than the start listed: not settled.
	short := reference{StartedAt: 1, TTL: 60, Ops: []refOp{{OperationID: opID{text: "a"}, Machines: 5}}}
	require.False(t, tallyRound(short, info, nil, time.UnixMilli(2)).settled)

	acc := newAccumulator()
	acc.counters["a"] = counters{Total: 4, Success: 1}
	res := acc.result(tally{machines: 4, answered: 1, success: 1}, false)
	require.Equal(t, []string{"3 of 4 machines had not answered when the results were collected"}, res.Notes)
	res = acc.result(tally{machines: 4, answered: 1, success: 1}, true)
	require.Equal(t, []string{"3 of 4 machines never answered before the operation TTL"}, res.Notes)
	empty := newAccumulator().result(tally{}, true)
	require.Equal(t, []string{"the configured Cytomic clients have no machines"}, empty.Notes)
}

func TestHostsAreCapped(t *testing.T) {
	t.Parallel()
	acc := newAccumulator()
	var b strings.Builder
	b.WriteString("hostname;x\n")
	for i := range edr.MaxListed + 50 {
		b.WriteString("host-" + strings.Repeat("0", 3-len(itoa(i))) + itoa(i) + ";1\n")
	}
	sum, err := parseFile(strings.NewReader(b.String()), DefaultMaxLine)
	require.NoError(t, err)
	acc.add(sum)
	res := acc.result(tally{machines: 1, answered: 1, success: 1}, false)
	require.Len(t, res.Hosts, edr.MaxListed)
	require.Equal(t, edr.MaxListed+50, res.HostsTotal)
	require.Equal(t, "host-000", res.Hosts[0], "sorted")
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestQueryIsWellFormed(t *testing.T) {
	t.Parallel()
	sha := strings.Repeat("ab", 32)
	q := Query(sha)
	require.True(t, strings.HasPrefix(q, "SELECT "))
	require.Equal(t, 2, strings.Count(q, "'"+sha+"'"))
	require.Zero(t, strings.Count(q, "'")%2, "balanced quotes")
	require.Equal(t, strings.Count(q, "("), strings.Count(q, ")"))
	require.Contains(t, q, "AS hostname", "every row names its host")
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := reference{StartedAt: start.UnixMilli(), TTL: 90}
	require.True(t, r.deadline().Equal(start.Add(90*time.Second)))
}

// TestTallyFollowsCounters: the /state counters decide, as the source
// document says; /info is only the fallback.
func TestTallyFollowsCounters(t *testing.T) {
	t.Parallel()
	start := time.UnixMilli(1_000_000)
	ref := reference{StartedAt: start.UnixMilli(), TTL: 3600, Ops: []refOp{{OperationID: opID{text: "a"}}}}
	st := func(total, ok, partial, failed int64) map[string]stateOp {
		return map[string]stateOp{"a": {OperationID: opID{text: "a"}, Counters: counters{
			Total: flexInt(total), Success: flexInt(ok), Partial: flexInt(partial), Error: flexInt(failed)}}}
	}
	emptyInfo := map[string]infoOp{"a": {OperationID: opID{text: "a"}}}
	// /info's entries in a shape we do not know say nothing; the counters do.
	opaque := map[string]infoOp{"a": {OperationID: opID{text: "a"}, Info: []machineInfo{{Status: "Running"}, {Status: "Running"}}}}

	tl := tallyRound(ref, emptyInfo, st(3, 1, 0, 0), start)
	require.False(t, tl.settled, "2 of 3 machines have not answered")
	require.Equal(t, 3, tl.machines)
	require.Equal(t, 1, tl.answered)

	tl = tallyRound(ref, opaque, st(3, 1, 1, 1), start)
	require.True(t, tl.settled, "the counters add up, whatever /info says")
	require.NoError(t, tl.allFailed("poll"))

	tl = tallyRound(ref, nil, st(2, 0, 0, 2), start)
	require.True(t, tl.settled)
	err := tl.allFailed("poll")
	require.ErrorContains(t, err, "every machine failed")
	require.ErrorContains(t, err, "no error code")

	// Nothing names a machine: not finished at once (the counters may lag
	// the start), finished after emptyGrace (a client without machines).
	require.False(t, tallyRound(ref, emptyInfo, st(0, 0, 0, 0), start.Add(time.Second)).settled)
	require.True(t, tallyRound(ref, emptyInfo, st(0, 0, 0, 0), start.Add(emptyGrace)).settled)
	require.False(t, tallyRound(ref, emptyInfo, nil, start.Add(emptyGrace)).settled,
		"without /state, an empty /info is not an answer")

	tl = tallyRound(ref, nil, nil, start)
	require.False(t, tl.settled)
	require.Len(t, tl.missing, 1)
}

// TestChunkedSplitsRefusedBatches: a batch refused as a bad request is
// split so one unknown ID does not fail every other operation's round.
func TestChunkedSplitsRefusedBatches(t *testing.T) {
	t.Parallel()
	ids := []opID{{text: "1"}, {text: "2"}, {text: "bad"}, {text: "4"}, {text: "5"}}
	var calls int
	fetch := func(_ context.Context, part []opID) (map[string]int, error) {
		calls++
		out := map[string]int{}
		for _, id := range part {
			if id.text == "bad" {
				return nil, &edr.Error{Vendor: vendor, Op: "info", Status: http.StatusNotFound}
			}
			out[id.text] = 1
		}
		return out, nil
	}
	got, reqs, err := chunked(context.Background(), ids, 500, fetch)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"1": 1, "2": 1, "4": 1, "5": 1}, got)
	require.Equal(t, calls, reqs)
	require.LessOrEqual(t, reqs, 7, "halving costs O(log n) extra requests")

	// Anything but a refusal of the IDs fails the round as before.
	_, _, err = chunked(context.Background(), ids, 500, func(context.Context, []opID) (map[string]int, error) {
		return nil, &edr.Error{Vendor: vendor, Op: "info", Status: http.StatusServiceUnavailable, Retryable: true}
	})
	require.Error(t, err)
}
