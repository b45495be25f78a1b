package cytomic

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/analysisfleet/analysisfleet/edr/edrtest"
)

// Every decoder of bytes that come from Cytomic (or from a checkpoint) is
// fuzzed: it must never panic, must fail only with errMalformed, and what it
// accepts must satisfy the invariants the driver relies on.

func FuzzDecodeToken(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{
		`{"access_token":"abc","token_type":"bearer","expires_in":3600}`,
		`{"access_token":"abc","expires_in":"60"}`,
		`{"access_token":"","token_type":"mac"}`,
		`{"error":"invalid_grant"}`,
		`[]`, `null`, ``, `{"expires_in":1e400}`,
	}, decodeToken, func(t *testing.T, tok tokenResponse) {
		if strings.TrimSpace(tok.AccessToken) == "" || tok.ExpiresIn < 0 {
			t.Fatalf("accepted an unusable token: %+v", tok)
		}
	})
}

func FuzzDecodeStart(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{
		`[{"pandaID":"1001","operationId":"a-1","MUIDs":["m1","m2"]}]`,
		`[{"pandaID":1001,"operationId":42,"MUIDs":[1,2]}]`,
		`{"pandaID":"1","operationId":"x"}`,
		`[{"pandaID":"1"}]`, `[]`, `null`, `"x"`, `[{"operationId":{"a":1}}]`,
	}, decodeStart, func(t *testing.T, ops []startOp) {
		for _, op := range ops {
			if op.OperationID.text == "" {
				t.Fatal("accepted an operation without ID")
			}
			checkRoundTrip(t, op.OperationID)
		}
	})
}

func FuzzDecodeInfo(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{
		`[{"panda":"1001","operationId":"a","info":[{"MUID":"m","status":"Success"}]}]`,
		`[{"panda":1,"operationId":2,"info":[{"MUID":3,"status":"Error","errorCode":"202","errorDescription":"x"}]}]`,
		`[{"operationId":"a","info":[{"status":"PARTIALLYSUCCEEDED","errorCode":null}]}]`,
		`{"operationId":"solo","info":[]}`,
		`[{"operationId":"a","info":"x"}]`, `[]`, `null`, `<html>`,
	}, decodeInfo, func(t *testing.T, ops map[string]infoOp) {
		for id, op := range ops {
			if id == "" || id != op.OperationID.text {
				t.Fatalf("bad key %q for %q", id, op.OperationID.text)
			}
			checkRoundTrip(t, op.OperationID)
			for _, m := range op.Info {
				_ = parseStatus(string(m.Status))
				if d := describeCode(string(m.ErrorCode), string(m.ErrorDescription)); !utf8.ValidString(d) || strings.ContainsAny(d, "\n\r") {
					t.Fatalf("unsafe description %q", d)
				}
			}
		}
		ref := reference{StartedAt: 1, TTL: 1}
		for id := range ops {
			ref.Ops = append(ref.Ops, refOp{OperationID: opID{text: id}})
		}
		tl := tallyRound(ref, ops, nil, time.UnixMilli(1))
		if tl.answered > tl.machines {
			t.Fatalf("answered %d > machines %d", tl.answered, tl.machines)
		}
		_ = tl.allFailed("poll")
	})
}

func FuzzDecodeState(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{
		`[{"panda":"1001","operationId":"a","url":"https://x/y?sig=1","counters":{"totalOperationElements":3,"totalSuccess":1,"totalPartiallySucceeded":1,"totalError":1}}]`,
		`[{"panda":1,"operationId":2,"counters":{"totalOperationElements":"3","totalSuccess":"0"}}]`,
		`[{"operationId":"a","counters":{"totalSuccess":-1}}]`,
		`[{"operationId":"a","url":5}]`, `[]`, `null`, `{}`,
	}, decodeState, func(t *testing.T, ops map[string]stateOp) {
		for id, op := range ops {
			if id == "" || id != op.OperationID.text {
				t.Fatalf("bad key %q", id)
			}
			c := op.Counters
			if c.Total < 0 || c.Success < 0 || c.Partial < 0 || c.Error < 0 {
				t.Fatalf("negative counter %+v", c)
			}
		}
	})
}

func FuzzParseFile(f *testing.F) {
	for _, s := range []string{
		"hostname;pid;path\nWIN-A;1;C:\\a.exe\nWIN-B;2;C:\\b.exe\n",
		"\uFEFF\"Machine\";\"pid\"\r\n\"PC-1\";\"1\"\r\n",
		"pid\n1\n2\n", "", "\n\n\n", "hostname\nhostname\n", ";;;\n;;\n", "MUID\n\"\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sum, err := parseFile(bytes.NewReader(b), 4<<10)
		if err != nil {
			if !errors.Is(err, errLineTooLong) && !errors.Is(err, errTooManyFields) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		lines := int64(bytes.Count(b, []byte("\n")) + 1)
		if sum.Rows < 0 || sum.Rows >= lines && sum.Rows > 0 {
			t.Fatalf("%d rows from %d lines", sum.Rows, lines)
		}
		if int64(len(sum.Hosts)) > sum.Rows {
			t.Fatalf("%d hosts from %d rows", len(sum.Hosts), sum.Rows)
		}
		if sum.HostColumn >= len(sum.Header) {
			t.Fatalf("host column %d outside header %v", sum.HostColumn, sum.Header)
		}
		for k, h := range sum.Hosts {
			if h == "" || k != strings.ToLower(h) {
				t.Fatalf("bad host entry %q → %q", k, h)
			}
		}
	})
}

func FuzzDecodeRef(f *testing.F) {
	for _, s := range []string{
		`{"ops":[{"pandaID":"1001","operationId":"a","machines":3}],"startedAt":1767225600000,"ttl":3600}`,
		`{"ops":[{"pandaID":1001,"operationId":42}],"startedAt":1,"ttl":1}`,
		`{"ops":[],"startedAt":1,"ttl":1}`, `{}`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRef("poll", b)
		if err != nil {
			return
		}
		if len(r.ids()) == 0 || r.TTL <= 0 {
			t.Fatalf("accepted an unusable reference %+v", r)
		}
		for _, id := range r.ids() {
			if id.text == "" {
				t.Fatal("accepted an empty operation ID")
			}
			checkRoundTrip(t, id)
		}
		_ = r.deadline()
	})
}

// checkRoundTrip asserts an ID re-encodes to JSON that decodes to itself.
func checkRoundTrip(t *testing.T, id opID) {
	t.Helper()
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatalf("marshal %q: %v", id.text, err)
	}
	var back opID
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("re-decode %s: %v", b, err)
	}
	if back.text != strings.TrimSpace(id.text) {
		t.Fatalf("round trip %q → %s → %q", id.text, b, back.text)
	}
}

// FuzzCheckTokens: whatever checkTokens lets through decodes to strings no
// longer than three times the cap (the cap counts bytes as written; an
// escape is never shorter than what it decodes to, but a stray invalid
// UTF-8 byte decodes to the 3-byte U+FFFD).
func FuzzCheckTokens(f *testing.F) {
	for _, s := range []string{
		`{"a":"0123456789"}`, `["\"\\\"","x"]`, `12345678901`, `{"k":-1.5e+10}`, `"unterminated`, `[true,false,null]`,
	} {
		f.Add([]byte(s))
	}
	const max = 8
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkTokens(b, max)
		var v any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		var long bool
		var walk func(any)
		walk = func(x any) {
			switch x := x.(type) {
			case string:
				long = long || len(x) > 3*max
			case map[string]any:
				for k, e := range x {
					long = long || len(k) > 3*max
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(v)
		if long && err == nil {
			t.Fatalf("a decoded string longer than %d passed: %q", 3*max, b)
		}
		if err != nil && !errors.Is(err, errTokenTooLong) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
