package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/internal/textfmt"
)

// actionReplay is the audit stream's name of a dead-letter replay.
const actionReplay = "dlq-replay"

// replayConfirmPage is the confirmation page of a replay: the dry run.
type replayConfirmPage struct {
	Target  string // what was chosen, for people: "reason not_json", "letter 0@12"
	Reason  string
	Letter  string // "P@O" when one letter was chosen
	UpTo    string // the end offsets the dry run read up to, for the POST
	Res     *ReplayResult
	Refused []string // "\"Topic\": n"
}

// replaySelection reads a replay's choice from the query or form: reason
// (present, possibly empty: letters without a reason header) or letter
// ("partition@offset"), and upto (the dry run's end offsets).
func replaySelection(v url.Values) (ReplaySelection, string, error) {
	var sel ReplaySelection
	target := ""
	switch l := v.Get("letter"); {
	case l != "":
		p, o, ok := strings.Cut(l, "@")
		pn, err1 := strconv.ParseInt(p, 10, 32)
		on, err2 := strconv.ParseInt(o, 10, 64)
		if !ok || err1 != nil || err2 != nil || pn < 0 || on < 0 {
			return sel, "", fmt.Errorf("letter %q: want partition@offset", textfmt.Clip(l, 40))
		}
		sel.Letter = &kafkaview.Pos{Partition: int32(pn), Offset: on}
		target = "letter " + sel.Letter.String()
	case v.Has("reason"):
		sel.Reason = v.Get("reason")
		target = "reason " + strconv.Quote(textfmt.Clip(sel.Reason, 100))
	default:
		return sel, "", errors.New("choose a reason or a letter to replay")
	}
	if u := v.Get("upto"); u != "" {
		sel.UpTo = map[int32]int64{}
		for _, f := range strings.Split(u, ",") {
			p, o, ok := strings.Cut(f, ":")
			pn, err1 := strconv.ParseInt(p, 10, 32)
			on, err2 := strconv.ParseInt(o, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				return sel, "", fmt.Errorf("upto %q: want partition:offset,…", textfmt.Clip(u, 40))
			}
			sel.UpTo[int32(pn)] = on
		}
	}
	return sel, target, nil
}

func upToText(m map[int32]int64) string {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d", p, m[p])
	}
	return b.String()
}

// replayConfirm shows what a replay would do (the dry run) and asks for
// the POST.
func (s *Server) replayConfirm(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Kafka == nil {
		s.fail(w, r, http.StatusNotFound, "Kafka: not configured: there are no dead letters to replay")
		return
	}
	sel, target, err := replaySelection(r.URL.Query())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.cfg.Kafka.Replay(r.Context(), sel, true)
	if err == nil && sel.Letter != nil && res.Matched == 0 {
		err = ErrNoLetter
	}
	switch {
	case errors.Is(err, ErrNoLetter):
		s.fail(w, r, http.StatusNotFound, ErrNoLetter.Error())
		return
	case err != nil:
		s.fail(w, r, http.StatusServiceUnavailable, "cannot read the dead letters: "+s.scrub(err.Error()))
		return
	}
	p := replayConfirmPage{Target: target, Reason: sel.Reason, Res: res, UpTo: upToText(res.UpTo)}
	if sel.Letter != nil {
		p.Letter = sel.Letter.String()
	}
	for t, n := range res.ByRefusedTopic {
		p.Refused = append(p.Refused, fmt.Sprintf("%s: %d", t, n))
	}
	sort.Strings(p.Refused)
	s.render(w, r, http.StatusOK, "replay", "Replay dead letters: "+target, "dlq", p)
}

// replay performs a confirmed replay: refused unless the console may
// write, recorded in the audit stream whatever the result.
func (s *Server) replay(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm() // a malformed body leaves the form empty: refused below
	sel, target, selErr := replaySelection(r.PostForm)
	if selErr != nil {
		target = "(bad choice)"
	}
	audit := s.auditor(r, actionReplay, target)
	if !s.cfg.Write {
		audit("refused: read-only console")
		s.fail(w, r, http.StatusForbidden, "this console is read-only: start it with write access (fleetctl console --write) to replay dead letters")
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		audit("refused: not confirmed")
		s.fail(w, r, http.StatusBadRequest, "not confirmed: use the confirmation page's button")
		return
	}
	if selErr != nil {
		audit("refused: " + selErr.Error())
		s.fail(w, r, http.StatusBadRequest, selErr.Error())
		return
	}
	if s.cfg.Kafka == nil {
		audit("refused: Kafka not configured")
		s.fail(w, r, http.StatusNotFound, "Kafka: not configured: there are no dead letters to replay")
		return
	}
	// One letter: judged first, so a refused one is answered as such.
	if sel.Letter != nil {
		dry, err := s.cfg.Kafka.Replay(r.Context(), sel, true)
		if err == nil && dry.Matched == 0 {
			err = ErrNoLetter
		}
		switch {
		case errors.Is(err, ErrNoLetter):
			audit("refused: no such letter")
			s.fail(w, r, http.StatusNotFound, ErrNoLetter.Error())
			return
		case err != nil:
			audit("error: " + s.scrub(err.Error()))
			s.fail(w, r, http.StatusServiceUnavailable, "cannot read the dead letters: "+s.scrub(err.Error()))
			return
		case dry.Replayable == 0:
			audit("refused: " + dry.Why)
			s.fail(w, r, http.StatusConflict, "not replayed: "+dry.Why)
			return
		}
	}
	res, err := s.cfg.Kafka.Replay(r.Context(), sel, false)
	if err != nil {
		n := 0
		if res != nil {
			n = res.Replayed
		}
		audit(fmt.Sprintf("error after %d replayed: %s", n, s.scrub(err.Error())))
		s.fail(w, r, http.StatusServiceUnavailable, "replay failed: "+s.scrub(err.Error()))
		return
	}
	audit(fmt.Sprintf("ok: replayed %d of %d chosen; skipped %d (%d truncated, %d refused: not a job topic)",
		res.Replayed, res.Matched, res.Skipped, res.Truncated, res.RefusedTopic))
	s.forget("snapshot")
	http.Redirect(w, r, fmt.Sprintf("/dlq?done=replay&replayed=%d&skipped=%d&refused=%d", res.Replayed, res.Skipped, res.RefusedTopic),
		http.StatusSeeOther)
}

// replayNotice is the DLQ page's message after a replay (numbers only:
// nothing else from the URL is echoed).
func replayNotice(q url.Values) string {
	n := func(k string) int {
		v, _ := strconv.Atoi(q.Get(k))
		return max(v, 0)
	}
	msg := fmt.Sprintf("Replayed %d dead letter(s) to their job topics", n("replayed"))
	if sk := n("skipped"); sk > 0 {
		msg += fmt.Sprintf("; skipped %d (of which %d refused: the source topic is not a job topic)", sk, n("refused"))
	}
	return msg + ". A job that already ran is dropped by the ledger; a record still invalid comes back here. See the audit log on the overview."
}
