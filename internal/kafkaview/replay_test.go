package kafkaview

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
)

func letter(source string, hs ...string) *kgo.Record {
	r := &kgo.Record{Key: []byte("k"), Value: []byte("v")}
	if source != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: intake.HeaderSourceTopic, Value: []byte(source)})
	}
	for i := 0; i+1 < len(hs); i += 2 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: hs[i], Value: []byte(hs[i+1])})
	}
	return r
}

// TestJudge: a letter goes back only whole and only into a job topic; the
// verdict says why not.
func TestJudge(t *testing.T) {
	list := JobTopics{Topics: []string{"Job.OSL", "Job.SVG"}, DLQ: "Job.DLQ", Result: "Result"}
	re := JobTopics{Regex: regexp.MustCompile(`^Job\.`), DLQ: "Job.DLQ", Result: "Job.Result"}
	for _, c := range []struct {
		name    string
		jt      JobTopics
		r       *kgo.Record
		ok      bool
		refused bool
		cut     bool
		why     string
	}{
		{"a job topic", list, letter("Job.OSL"), true, false, false, ""},
		{"a job topic by regex", re, letter("Job.SVG"), true, false, false, ""},
		{"the result topic", list, letter("Result"), false, true, false, `its source topic "Result" is not a job topic`},
		{"the result topic the regex matches", re, letter("Job.Result"), false, true, false, `its source topic "Job.Result" is not a job topic`},
		{"an illegal name the regex matches", re, letter("Job.OSL\n"), false, true, false, `its source topic "Job.OSL\n" is not a job topic`},
		{"the DLQ itself", re, letter("Job.DLQ"), false, false, false, "its source is the DLQ topic itself"},
		{"no source", list, letter(""), false, false, false, "no dlq-source-topic header"},
		{"value cut", list, letter("Job.OSL", intake.HeaderTruncated, "value"), false, false, true, "truncated when dead-lettered"},
		{"key and headers cut", list, letter("Job.OSL", intake.HeaderTruncated, "key,headers"), false, false, true,
			"truncated when dead-lettered (key, headers cut)"},
	} {
		v := c.jt.Judge(c.r)
		require.Equal(t, c.ok, v.Replayable, c.name)
		require.Equal(t, c.refused, v.RefusedTopic, c.name)
		require.Equal(t, c.cut, v.Truncated, c.name)
		require.Equal(t, c.why, v.Why, c.name)
	}
	require.Equal(t, `ab\x01…`, Printable("ab\x01cd", 3))
}
