package sampledb

import (
	"bytes"
	"encoding/binary"
	"sync"
	"unicode/utf8"
)

// decodeBriefEnvelopeFast is decodeBriefEnvelope's fast way: a hand-written
// scanner over the body that reads the envelope's members and each job's
// brief part and checks the syntax of everything else as it skips it,
// without reflection and with about one allocation per job (its ID).
//
// It reads only the ordinary: member names spelled exactly as the wire
// types name them, each at most once, without escapes; strings in valid
// UTF-8; id and state strings without escapes. On anything else (and on
// whatever the reference, decodeBriefEnvelopeRef, would refuse) it is not
// ok and decodeBriefEnvelope asks the reference, so that whenever it is ok
// its envelope and page are the reference's (FuzzBriefFastMatchesReference).
// Values that are not plain go through the very methods the reference
// calls (ID.UnmarshalJSON, flexInt.UnmarshalJSON, wireEnvelope.envelope,
// wireBrief.job via briefPage).
func decodeBriefEnvelopeFast(b []byte) (Envelope, bool) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return Envelope{}, false
	}
	sc := briefScratchPool.Get().(*briefScratch)
	defer sc.release()
	d := briefDecoder{b: t, items: sc.items[:0]}
	w, ok := d.envelope()
	sc.items = d.items[:0]
	if !ok {
		clear(d.items)
		return Envelope{}, false
	}
	// The page's items, nil for a null one, as the reference's []*wireBrief.
	ws := sc.ptrs[:0]
	for i := range d.items {
		var p *wireBrief
		if !d.items[i].null {
			p = &d.items[i].w
		}
		ws = append(ws, p)
	}
	sc.ptrs = ws[:0]
	jobs := briefJobsPool.Get().(*[]Job)
	pg := briefPage(ws, *jobs)
	pg.pooled = true
	clear(ws)
	clear(d.items)
	env := w.envelope()
	env.brief, env.sum = &pg, pageSum(t)
	return env, true
}

// briefItem is one item of a page being read: a job's brief part, or null.
type briefItem struct {
	w    wireBrief
	null bool
}

// briefScratch is what decodeBriefEnvelopeFast reuses from page to page.
// Nothing in it outlives a call: it is cleared before it is put back.
type briefScratch struct {
	items []briefItem
	ptrs  []*wireBrief
}

// maxBriefScratch is the most items a scratch keeps between pages.
const maxBriefScratch = 1 << 14

// release puts sc back in the pool unless it grew too big to keep.
func (sc *briefScratch) release() {
	if cap(sc.items) > maxBriefScratch || cap(sc.ptrs) > maxBriefScratch {
		return
	}
	briefScratchPool.Put(sc)
}

var briefScratchPool = sync.Pool{New: func() any { return new(briefScratch) }}

// maxBriefDepth bounds the nesting the scanner follows (jsontext allows
// 10,000 levels; deeper than this, the reference reads the body).
const maxBriefDepth = 1000

// Member names as the wire types spell them, folded (upper case, without
// '_' and '-'): a name that folds to one of these but is not spelled
// exactly so may match the member case-insensitively, and is left to the
// reference.
var (
	envelopeFolded = []string{"RESPONSECODE", "LIMIT", "OFFSET", "COUNT", "SIZE", "METADATA", "MESSAGES", "DATA"}
	briefFolded    = []string{"ID", "STATE", "ABORTREQUESTED", "ENQUEUEDTIMESTAMP", "STARTTIMESTAMP", "ENDTIMESTAMP"}
)

// briefDecoder scans a brief page's body; i is the offset of the next byte
// to read. Its methods report false where the fast way does not apply.
type briefDecoder struct {
	b     []byte
	i     int
	items []briefItem
}

// plainByte tells the bytes that a string holds as they are: printable
// ASCII other than the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// ws skips JSON whitespace.
func (d *briefDecoder) ws() {
	if d.i < len(d.b) && d.b[d.i] > ' ' {
		return // none: the usual case
	}
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek is the next byte, 0 at the end.
func (d *briefDecoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// after reads what follows a member or an item: whitespace, then ',' or
// end (the object's or the array's closing byte). more reports a ','.
func (d *briefDecoder) after(end byte) (more, ok bool) {
	d.ws()
	if d.i >= len(d.b) {
		return false, false
	}
	c := d.b[d.i]
	d.i++
	switch c {
	case ',':
		d.ws()
		return true, true
	case end:
		return false, true
	}
	return false, false
}

// name reads a member name and the ':' after it. Only names of printable
// ASCII without escapes are read.
func (d *briefDecoder) name() ([]byte, bool) {
	b := d.b
	if d.i >= len(b) || b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	i := start
	for i < len(b) && plainByte[b[i]] {
		i++
	}
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	name := b[start:i]
	d.i = i + 1
	d.ws()
	if d.i >= len(b) || b[d.i] != ':' {
		return nil, false
	}
	d.i++
	d.ws()
	return name, true
}

// str reads a string and returns what is between its quotes; esc reports
// escapes in it (else that is the string's text). Not ok when the string
// is not valid JSON, is not valid UTF-8, or escapes half a surrogate pair.
func (d *briefDecoder) str() (s []byte, esc, ok bool) {
	b := d.b
	start := d.i + 1
	i := start
	for {
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			return nil, false, false
		}
		switch c := b[i]; {
		case c == '"':
			d.i = i + 1
			return b[start:i], esc, true
		case c == '\\':
			n := escapeLen(b[i:])
			if n == 0 {
				return nil, false, false
			}
			esc = true
			i += n
		case c < 0x20:
			return nil, false, false
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return nil, false, false
			}
			i += n
		}
	}
}

// Masks for plain8.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether the 8 bytes of x are all plainByte: none is below
// 0x20, a quote, a backslash or above 0x7f.
func plain8(x uint64) bool {
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	ctl := (x - ones*0x20) &^ x // a byte below 0x20, exact when none is above 0x7f
	return (ctl|(q-ones)&^q|(bs-ones)&^bs|x)&highs == 0
}

// escapeLen is the length of the escape sequence b starts with, 0 when it
// is not valid or is half a surrogate pair.
func escapeLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
	default:
		return 0
	}
	r, ok := hex4(b[2:])
	switch {
	case !ok:
		return 0
	case r < 0xd800 || r > 0xdfff:
		return 6
	case r >= 0xdc00:
		return 0 // a low half alone
	}
	if len(b) < 12 || b[6] != '\\' || b[7] != 'u' {
		return 0
	}
	if lo, ok := hex4(b[8:]); !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0
	}
	return 12
}

// hex4 reads the four hexadecimal digits b starts with.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a JSON number; simple reports one without fraction or
// exponent.
func (d *briefDecoder) number() (simple, ok bool) {
	b, i := d.b, d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i++
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false, false
	}
	simple = true
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		simple = false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		simple = false
	}
	d.i = i
	return simple, true
}

// literal reads the literal lit (true, false or null).
func (d *briefDecoder) literal(lit string) bool {
	if !bytes.HasPrefix(d.b[d.i:], []byte(lit)) {
		return false
	}
	d.i += len(lit)
	return true
}

// skip reads a value of any kind at the given nesting depth.
func (d *briefDecoder) skip(depth int) bool {
	switch d.peek() {
	case '"':
		_, _, ok := d.str()
		return ok
	case '{':
		if depth >= maxBriefDepth {
			return false
		}
		d.i++
		d.ws()
		if d.peek() == '}' {
			d.i++
			return true
		}
		return d.list('}', func() bool {
			if d.peek() != '"' {
				return false
			}
			if _, _, ok := d.str(); !ok {
				return false
			}
			d.ws()
			if d.peek() != ':' {
				return false
			}
			d.i++
			d.ws()
			return d.skip(depth + 1)
		})
	case '[':
		if depth >= maxBriefDepth {
			return false
		}
		d.i++
		d.ws()
		if d.peek() == ']' {
			d.i++
			return true
		}
		return d.list(']', func() bool { return d.skip(depth + 1) })
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	_, ok := d.number()
	return ok
}

// raw reads a value of any kind and returns its text.
func (d *briefDecoder) raw(depth int) ([]byte, bool) {
	start := d.i
	if !d.skip(depth) {
		return nil, false
	}
	return d.b[start:d.i], true
}

// flex reads a flexInt: a plain integer here, anything else by its method
// (a string or a number; null is zero).
func (d *briefDecoder) flex(f *flexInt) bool {
	start := d.i
	switch c := d.peek(); {
	case c == '-' || '0' <= c && c <= '9':
		simple, ok := d.number()
		if !ok {
			return false
		}
		if n, ok := smallInt(d.b[start:d.i]); simple && ok {
			*f = flexInt(n)
			return true
		}
	case c == '"':
		s, esc, ok := d.str()
		if !ok {
			return false
		}
		// Digits only: no RFC 3339 time, so strconv.ParseInt's reading.
		if n, ok := smallInt(s); !esc && ok && len(s) > 0 && s[0] != '-' {
			*f = flexInt(n)
			return true
		}
	case c == 'n':
		if !d.literal("null") {
			return false
		}
		*f = 0
		return true
	default:
		return false // not a string, number or null: the method refuses it
	}
	return f.UnmarshalJSON(d.b[start:d.i]) == nil
}

// smallInt reads -?[0-9]{1,18}, which always fits an int64.
func smallInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// foldsToAny reports whether the ASCII name, folded, is one of folded.
func foldsToAny(name []byte, folded []string) bool {
	for _, f := range folded {
		if foldsTo(name, f) {
			return true
		}
	}
	return false
}

// foldsTo reports whether the ASCII name, upper-cased and without '_' and
// '-', is folded.
func foldsTo(name []byte, folded string) bool {
	j := 0
	for _, c := range name {
		if c == '_' || c == '-' {
			continue
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if j >= len(folded) || folded[j] != c {
			return false
		}
		j++
	}
	return j == len(folded)
}

// envelope reads the envelope: the whole body, whose data must be an array.
func (d *briefDecoder) envelope() (w wireEnvelope, ok bool) {
	d.i = 1 // past '{'
	d.ws()
	data := false
	ok = d.members(func(name []byte) (bit uint8, ok bool) {
		switch string(name) {
		case "responseCode":
			return 1 << 0, d.flex(&w.ResponseCode)
		case "limit":
			return 1 << 1, d.flex(&w.Limit)
		case "offset":
			return 1 << 2, d.flex(&w.Offset)
		case "count":
			return 1 << 3, d.flex(&w.Count)
		case "size":
			return 1 << 4, d.flex(&w.Size)
		case "metaData":
			w.MetaData, ok = d.raw(1)
			return 1 << 5, ok
		case "messages":
			w.Messages, ok = d.raw(1)
			return 1 << 6, ok
		case "data":
			data = true
			return 1 << 7, d.data()
		}
		return 0, !foldsToAny(name, envelopeFolded) && d.skip(1)
	})
	// No data (the reference's data is then nil), or more after the body.
	return w, ok && data && d.i == len(d.b)
}

// members reads an object's members, d.i at the first name: member reads
// the value of each and says which bit the name is (0: a name not read).
// Not ok when member is not, or a name comes twice.
func (d *briefDecoder) members(member func(name []byte) (bit uint8, ok bool)) bool {
	var seen uint8
	return d.list('}', func() bool {
		name, ok := d.name()
		if !ok {
			return false
		}
		bit, ok := member(name)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}

// list reads the members of an object or the elements of an array, d.i at
// the first, to its end close: each reads one.
func (d *briefDecoder) list(close byte, each func() bool) bool {
	for {
		if !each() {
			return false
		}
		more, ok := d.after(close)
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// data reads the envelope's data: an array of job objects and nulls.
func (d *briefDecoder) data() bool {
	if d.peek() != '[' {
		return false // null too: the reference is not ok without data
	}
	d.i++
	d.ws()
	if d.peek() == ']' {
		d.i++
		return true
	}
	return d.list(']', func() bool {
		switch d.peek() {
		case '{':
			d.items = append(d.items, briefItem{})
			return d.job(&d.items[len(d.items)-1].w)
		case 'n':
			d.items = append(d.items, briefItem{null: true})
			return d.literal("null")
		}
		return false
	})
}

// job reads a job object's brief part into w (zero).
func (d *briefDecoder) job(w *wireBrief) bool {
	d.i++ // past '{'
	d.ws()
	if d.peek() == '}' {
		d.i++
		return true
	}
	return d.members(func(name []byte) (uint8, bool) {
		switch string(name) {
		case "id":
			return 1 << 0, d.id(&w.ID)
		case "state":
			return 1 << 1, d.state(&w.State)
		case "abortRequested":
			return 1 << 2, d.bool(&w.AbortRequested)
		case "enqueuedTimestamp":
			return 1 << 3, d.flex(&w.EnqueuedTimestamp)
		case "startTimestamp":
			return 1 << 4, d.flex(&w.StartTimestamp)
		case "endTimestamp":
			return 1 << 5, d.flex(&w.EndTimestamp)
		}
		return 0, !foldsToAny(name, briefFolded) && d.skip(3)
	})
}

// id reads a job ID: a string's text here, anything else by its method.
func (d *briefDecoder) id(id *ID) bool {
	start := d.i
	if d.peek() == '"' {
		s, esc, ok := d.str()
		if !ok {
			return false
		}
		if !esc {
			*id = ID(s)
			return true
		}
	} else if !d.skip(3) {
		return false
	}
	return id.UnmarshalJSON(d.b[start:d.i]) == nil
}

// state reads a job state: a string without escapes, or null (no state).
func (d *briefDecoder) state(st *string) bool {
	switch d.peek() {
	case '"':
		s, esc, ok := d.str()
		if !ok || esc {
			return false
		}
		*st = stateText(s)
		return true
	case 'n':
		return d.literal("null")
	}
	return false
}

// stateText is s as a string, without allocating for the usual states.
func stateText(s []byte) string {
	switch string(s) {
	case StateEnqueued:
		return StateEnqueued
	case StateExecuting:
		return StateExecuting
	case StateSuccess:
		return StateSuccess
	case StateFailed:
		return StateFailed
	case StateAborted:
		return StateAborted
	case StateTimeout:
		return StateTimeout
	}
	return string(s)
}

// bool reads true, false or null (false).
func (d *briefDecoder) bool(v *bool) bool {
	switch d.peek() {
	case 't':
		*v = true
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return false
}
