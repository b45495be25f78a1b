package cbc

import (
	"archive/zip"
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/analysisfleet/analysisfleet/edr"
)

// The export summariser reads an event export as a stream and keeps only
// counters and the set of distinct hosts. The document does not say which
// format the download has, so it sniffs:
//
//	1f 8b           gzip → sniff again inside
//	PK 03 04        zip  → every entry, sniffed again (spooled to TempDir above spoolInMemory)
//	[               JSON array of event objects
//	{"results":[…]} JSON object holding the events (the search API's shape);
//	                another key ({"events":[…]}, {"data":[…]}) when the object
//	                names no event field and the array holds event objects
//	{…}\n{…}        NDJSON, one event per line; the first object must name an
//	                event field (an error or status document is not an export)
//	anything else   CSV with a header line naming CBC event fields
//
// A host is device_name, else device_id, else hostname.

const (
	// maxArchiveDepth bounds archive nesting (gzip in zip is fine, deeper
	// is refused).
	maxArchiveDepth = 2
	// maxZipEntries bounds the entries of a zip export.
	maxZipEntries = 1000
	// inflateRatio bounds decompressed bytes at inflateRatio × MaxExport.
	inflateRatio = 4
	// spoolInMemory is how much of a zip export is held in memory before it
	// is spooled to a temporary file (zip needs random access).
	spoolInMemory = 8 << 20
	// maxHostLen bounds one host name (DNS names are at most 253 bytes).
	maxHostLen = 255
)

// MaxDistinctHosts is how many distinct hosts a summary counts exactly; past
// it the set stops growing, HostsTotal is a lower bound and a note says so.
const MaxDistinctHosts = 100_000

// errExportTooLarge is returned when an export exceeds MaxExport (raw) or
// its decompressed bound. Permanent.
var errExportTooLarge = errors.New("export exceeds the size limit")

// errMalformedExport marks an export the summariser cannot parse.
var errMalformedExport = errors.New("malformed export")

// errLineTooLong is returned when one line, CSV record or JSON value of the
// export exceeds MaxLine. Permanent.
var errLineTooLong = errors.New("export line too long")

// errSpoolBusy is returned when the spool budget is spent by other
// downloads. Retryable.
var errSpoolBusy = errors.New("the zip spool budget is in use by other exports")

// errSpoolTooLarge is returned when one zip export needs more spool than
// the whole budget. Permanent.
var errSpoolTooLarge = errors.New("zip export larger than the spool budget")

type exportLimits struct {
	maxRaw      int64  // bytes read from the download
	maxInflated int64  // bytes produced by decompression, all layers together
	maxHosts    int    // distinct hosts counted exactly
	tempDir     string // where zip exports are spooled; "" = os.TempDir()
	spoolMem    int64  // zip bytes held in memory before spooling; 0 = spoolInMemory
	maxLine     int    // longest line, record or JSON value; 0 = DefaultMaxLine
	spool       *SpoolBudget
}

type summary struct {
	lim      exportLimits
	rows     int64
	hosts    map[string]struct{}
	capped   bool
	inflated int64
	// ioErr is the first failure of the input itself (network, size cap),
	// as opposed to a parse failure; it decides retryability.
	ioErr error
}

// summarize reads an export from r to its end. Errors are either the input's
// own read error (network failure, errExportTooLarge) or wrap
// errMalformedExport.
func summarize(r io.Reader, lim exportLimits) (edr.Result, error) {
	s := &summary{lim: lim, hosts: map[string]struct{}{}}
	err := s.consume(&guardReader{r: r, left: lim.maxRaw, s: s}, 0)
	if s.ioErr != nil {
		return edr.Result{}, s.ioErr
	}
	if err != nil {
		if errors.Is(err, errMalformedExport) {
			return edr.Result{}, err
		}
		return edr.Result{}, fmt.Errorf("%w: %v", errMalformedExport, err)
	}
	return s.result(), nil
}

func (s *summary) result() edr.Result {
	hosts := make([]string, 0, len(s.hosts))
	for h := range s.hosts {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	res := edr.Result{Rows: s.rows, HostsTotal: len(hosts)}
	if len(hosts) > 0 {
		res.Hosts = hosts[:min(len(hosts), edr.MaxListed)]
	}
	if s.capped {
		res.Notes = append(res.Notes, fmt.Sprintf("more than %d distinct hosts: the host total is a lower bound", s.lim.maxHosts))
	}
	return res
}

func (s *summary) add(host string) {
	s.rows++
	s.addHost(cleanHost(host))
}

// addHost adds a cleaned host name to the distinct set.
func (s *summary) addHost(host string) {
	if host == "" {
		return
	}
	if _, ok := s.hosts[host]; ok {
		return
	}
	if len(s.hosts) >= s.lim.maxHosts {
		s.capped = true
		return
	}
	s.hosts[host] = struct{}{}
}

func cleanHost(h string) string {
	h = strings.TrimSpace(strings.ToValidUTF8(h, ""))
	h = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, h)
	if len(h) > maxHostLen {
		h = strings.ToValidUTF8(h[:maxHostLen], "")
	}
	return h
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformedExport, fmt.Sprintf(format, args...))
}

// consume sniffs r and summarises it.
func (s *summary) consume(r io.Reader, depth int) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	isGzip := len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b
	isZip := bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06"))
	if (isGzip || isZip) && depth >= maxArchiveDepth {
		return malformed("archives nested more than %d deep", maxArchiveDepth)
	}
	switch {
	case isGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return malformed("gzip: %v", err)
		}
		defer zr.Close()
		if err := s.consume(s.inflate(zr), depth+1); err != nil {
			return wrapLayer("gzip", err)
		}
		return nil
	case isZip:
		return s.consumeZip(br, depth+1)
	default:
		return s.consumeText(br)
	}
}

func wrapLayer(layer string, err error) error {
	if errors.Is(err, errMalformedExport) {
		return err
	}
	return malformed("%s: %v", layer, err)
}

func (s *summary) consumeZip(r io.Reader, depth int) error {
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, cmp.Or(s.lim.spoolMem, spoolInMemory)+1)
	var ra io.ReaderAt
	switch {
	case err == io.EOF:
		ra = bytes.NewReader(buf.Bytes())
	case err != nil:
		return err
	default:
		f, err := os.CreateTemp(s.lim.tempDir, "cbc-export-*.zip")
		if err != nil {
			return s.spoolFailed(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		w := &spoolWriter{f: f, b: s.lim.spool}
		defer w.release()
		if _, err := w.Write(buf.Bytes()); err != nil {
			return s.spoolFailed(err)
		}
		buf = bytes.Buffer{}
		m, err := io.Copy(w, r)
		if err != nil {
			if s.ioErr != nil {
				return s.ioErr // the download's own failure
			}
			return s.spoolFailed(err)
		}
		n += m
		ra = f
	}
	zr, err := zip.NewReader(ra, n)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return malformed("zip: %v", err)
	}
	if len(zr.File) > maxZipEntries {
		return malformed("zip has %d entries (at most %d)", len(zr.File), maxZipEntries)
	}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || strings.HasPrefix(f.Name, "__MACOSX/") {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return malformed("zip entry %q: %v", sanitize(f.Name, 80), err)
		}
		err = s.consume(s.inflate(rc), depth)
		rc.Close()
		if err != nil {
			return wrapLayer(fmt.Sprintf("zip entry %q", sanitize(f.Name, 80)), err)
		}
	}
	return nil
}

// spoolFailed records a local failure to spool a zip (disk full, no
// TempDir): not the export's fault, so not "malformed".
func (s *summary) spoolFailed(err error) error {
	if s.ioErr == nil {
		s.ioErr = fmt.Errorf("spooling zip export to disk: %w", err)
	}
	return s.ioErr
}

// SpoolBudget is the bytes all zip exports sharing it may spool to disk at
// once: one per process (Config.Spool), whatever the number of CB Cloud
// accounts. Safe for concurrent use.
type SpoolBudget struct {
	mu   sync.Mutex
	max  int64
	used int64
}

// NewSpoolBudget returns a budget of max bytes.
func NewSpoolBudget(max int64) *SpoolBudget { return &SpoolBudget{max: max} }

// take reserves n bytes, all or nothing. It never waits: a download that
// waited while holding part of the budget could wait forever on another
// doing the same, and one that stalls its connection loses it (and its
// pre-signed URL) anyway. The caller fails retryably and gives back what
// it holds, and the task comes back later with a fresh URL.
func (b *SpoolBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *SpoolBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// inUse returns the bytes reserved now (tests).
func (b *SpoolBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// spoolWriter writes a spool file against a budget (nil = no budget).
type spoolWriter struct {
	f    io.Writer
	b    *SpoolBudget
	held int64
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.b != nil {
		n := int64(len(p))
		switch {
		case w.held+n > w.b.max:
			return 0, fmt.Errorf("%w (%d bytes)", errSpoolTooLarge, w.b.max)
		case !w.b.take(n):
			return 0, errSpoolBusy
		}
		w.held += n
	}
	return w.f.Write(p)
}

// release gives the reservation back; the spool file is removed with it.
func (w *spoolWriter) release() {
	if w.b != nil {
		w.b.give(w.held)
		w.held = 0
	}
}

// consumeText handles the JSON shapes and CSV.
func (s *summary) consumeText(br *bufio.Reader) error {
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte("\xef\xbb\xbf")) {
		_, _ = br.Discard(3)
	}
	for {
		b, err := br.Peek(1)
		if err == io.EOF {
			return nil // an empty export: nothing found
		}
		if err != nil {
			return err
		}
		if b[0] != ' ' && b[0] != '\t' && b[0] != '\r' && b[0] != '\n' {
			break
		}
		_, _ = br.Discard(1)
	}
	b, _ := br.Peek(1)
	g := &lineGuard{r: br, max: int64(cmp.Or(s.lim.maxLine, DefaultMaxLine)), s: s}
	switch b[0] {
	case '[':
		return s.consumeJSONArray(newJSONIn(g))
	case '{':
		return s.consumeJSONObject(newJSONIn(g))
	default:
		return s.consumeCSV(g)
	}
}

// lineGuard stops a parser from buffering one line, record or JSON value
// longer than max bytes: encoding/csv holds a whole record and
// encoding/json a whole value (and any run of whitespace) in memory, so an
// export of one endless line would be read whole. The parser marks its
// position (InputOffset) after every record or token; a Read that would go
// more than max bytes past the mark fails with errLineTooLong instead.
// Reads are cut to guardChunk so the parser's read-ahead stays small.
type lineGuard struct {
	r    io.Reader
	n    int64 // bytes handed to the parser
	mark int64 // the parser's input offset after its last complete item
	max  int64
	s    *summary
}

// guardChunk bounds one Read through a lineGuard.
const guardChunk = 32 << 10

func (g *lineGuard) Read(p []byte) (int, error) {
	if g.n-g.mark > g.max {
		if g.s.ioErr == nil {
			g.s.ioErr = fmt.Errorf("%w: export line longer than %d bytes", errLineTooLong, g.max)
		}
		return 0, g.s.ioErr
	}
	if len(p) > guardChunk {
		p = p[:guardChunk]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// jsonIn is a json.Decoder that marks its lineGuard after every step.
type jsonIn struct {
	dec *json.Decoder
	g   *lineGuard
}

func newJSONIn(g *lineGuard) *jsonIn { return &jsonIn{dec: json.NewDecoder(g), g: g} }

func (j *jsonIn) Token() (json.Token, error) {
	t, err := j.dec.Token()
	j.g.mark = j.dec.InputOffset()
	return t, err
}

func (j *jsonIn) Decode(v any) error {
	err := j.dec.Decode(v)
	j.g.mark = j.dec.InputOffset()
	return err
}

func (j *jsonIn) More() bool {
	more := j.dec.More()
	j.g.mark = j.dec.InputOffset()
	return more
}

// eventRow holds the fields of an event that name its host.
type eventRow struct {
	DeviceName json.RawMessage `json:"device_name"`
	DeviceID   json.RawMessage `json:"device_id"`
	Hostname   json.RawMessage `json:"hostname"`
}

func (r *eventRow) host() string {
	for _, v := range []json.RawMessage{r.DeviceName, r.DeviceID, r.Hostname} {
		if h := cleanHost(scalar(v)); h != "" {
			return h
		}
	}
	return ""
}

// scalar renders a JSON string or number as text; anything else is "".
func scalar(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return ""
	}
	switch c := v[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return string(v)
	}
	return ""
}

// decodeRow decodes one event object. A null element is skipped (ok false).
func decodeRow(dec *jsonIn) (host string, ok bool, err error) {
	var row *eventRow
	if err := dec.Decode(&row); err != nil {
		return "", false, jsonMalformed("event", err)
	}
	if row == nil {
		return "", false, nil
	}
	return row.host(), true, nil
}

func jsonMalformed(what string, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se), errors.As(err, &te), errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("json %s: %s", what, jsonErr(err))
	}
	return err // the input's own error: the caller sees ioErr
}

func expectDelim(dec *jsonIn, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return malformed("json: truncated")
		}
		return jsonMalformed("document", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return malformed("json: expected %q", want)
	}
	return nil
}

func expectEnd(dec *jsonIn) error {
	_, err := dec.Token()
	switch {
	case err == io.EOF:
		return nil
	case err == nil:
		return malformed("json: unexpected data after the document")
	}
	return jsonMalformed("document", err)
}

func (s *summary) consumeArray(dec *jsonIn) error {
	for dec.More() {
		h, ok, err := decodeRow(dec)
		if err != nil {
			return err
		}
		if ok {
			s.add(h)
		}
	}
	return expectDelim(dec, ']')
}

func (s *summary) consumeJSONArray(dec *jsonIn) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	if err := s.consumeArray(dec); err != nil {
		return err
	}
	return expectEnd(dec)
}

// consumeJSONObject handles the shapes that start with '{': an object
// holding the events in an array, and NDJSON. The first object is walked key
// by key. A "results" array is the export. Otherwise an object that names an
// event field (knownColumn) is the first NDJSON event; one that names none
// but holds an array of event objects under another key ("events", "data")
// is that array's container; anything else ({"url":"…"}, an error or job
// document served with 200) is not an export.
func (s *summary) consumeJSONObject(dec *jsonIn) error {
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var first eventRow
	container := false // a "results" array (or null) was read
	eventish := false  // the object names an event field
	var inner *summary // the first array of event objects under another key
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonMalformed("object key", err)
		}
		key, _ := tok.(string)
		lkey := strings.ToLower(key)
		eventish = eventish || knownColumn(lkey)
		switch {
		case lkey == "results" && !container:
			tok, err := dec.Token()
			if err != nil {
				return jsonMalformed("results", err)
			}
			switch tok {
			case json.Delim('['):
				container = true
				if err := s.consumeArray(dec); err != nil {
					return err
				}
			case json.Delim('{'):
				if err := skipObject(dec); err != nil {
					return err
				}
			case nil:
				container = true // "results": null, nothing found
			}
		case lkey == "device_name":
			err = dec.Decode(&first.DeviceName)
		case lkey == "device_id":
			err = dec.Decode(&first.DeviceID)
		case lkey == "hostname":
			err = dec.Decode(&first.Hostname)
		case knownColumn(lkey):
			var skip json.RawMessage
			err = dec.Decode(&skip)
		default:
			err = s.otherValue(dec, &inner)
		}
		if err != nil {
			return jsonMalformed("object", err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	switch {
	case container:
		return expectEnd(dec)
	case !eventish && inner != nil:
		s.merge(inner)
		return expectEnd(dec)
	case !eventish:
		return malformed("not a CBC event export: the JSON object names no event field and holds no array of events")
	}
	s.add(first.host())
	for {
		if !dec.More() {
			return expectEnd(dec)
		}
		h, ok, err := decodeRow(dec)
		if err != nil {
			return err
		}
		if ok {
			s.add(h)
		}
	}
}

// otherValue reads the value of a key that is neither "results" nor an
// event field. An array of event objects there may be the container of the
// events: *inner keeps the first non-empty one (else the first empty one).
func (s *summary) otherValue(dec *jsonIn, inner **summary) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonMalformed("object", err)
	}
	switch tok {
	case json.Delim('{'):
		return skipObject(dec)
	case json.Delim('['):
		if *inner != nil && (*inner).rows > 0 {
			return skipObject(dec) // the container is found already
		}
		arr, err := s.eventArray(dec)
		if err == nil && arr != nil && (*inner == nil || arr.rows > 0) {
			*inner = arr
		}
		return err
	}
	return nil // a scalar, read whole by Token
}

// eventArray reads an array whose '[' was read, under a key other than
// "results", into a summary of its own. The summary is nil when the array
// does not hold events: an element that is neither an object nor null, or a
// first object that names no event field. An empty array holds no events
// and is an empty summary.
func (s *summary) eventArray(dec *jsonIn) (*summary, error) {
	arr := &summary{lim: s.lim, hosts: map[string]struct{}{}}
	events, checked := true, false
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, jsonMalformed("array", err)
		}
		if !events || string(raw) == "null" {
			continue
		}
		if raw[0] != '{' {
			events = false
			continue
		}
		if !checked {
			checked = true
			if events = namesEventField(raw); !events {
				continue
			}
		}
		var row eventRow
		if err := json.Unmarshal(raw, &row); err != nil {
			return nil, jsonMalformed("event", err)
		}
		arr.add(row.host())
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, err
	}
	if !events {
		return nil, nil
	}
	return arr, nil
}

// namesEventField reports whether a JSON object has a key that is a CBC
// event field.
func namesEventField(obj json.RawMessage) bool {
	var fields map[string]json.RawMessage
	if json.Unmarshal(obj, &fields) != nil {
		return false
	}
	for k := range fields {
		if knownColumn(strings.ToLower(k)) {
			return true
		}
	}
	return false
}

// merge adds the rows and hosts of o, read from the same export.
func (s *summary) merge(o *summary) {
	s.rows += o.rows
	s.capped = s.capped || o.capped
	for h := range o.hosts {
		s.addHost(h)
	}
}

// skipObject consumes the rest of an object (or array) whose '{' (or '[')
// was read.
func skipObject(dec *jsonIn) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			if err == io.EOF {
				return malformed("json: truncated")
			}
			return jsonMalformed("object", err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// knownColumn reports whether a CSV header cell is a CBC event field, which
// tells a real export from an error page served with 200.
func knownColumn(c string) bool {
	switch c {
	case "hostname", "org_id", "alert_id", "ttp", "enriched":
		return true
	}
	for _, p := range []string{"device_", "process_", "event_", "parent_", "childproc_", "backend_",
		"netconn_", "filemod_", "regmod_", "modload_", "crossproc_", "scriptload_", "fileless_", "enriched_"} {
		if strings.HasPrefix(c, p) {
			return true
		}
	}
	return false
}

func (s *summary) consumeCSV(g *lineGuard) error {
	cr := csv.NewReader(g)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	g.mark = cr.InputOffset()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return csvMalformed(err)
	}
	idx := map[string]int{}
	known := false
	for i, c := range header {
		c = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(c, "\ufeff")))
		if _, dup := idx[c]; !dup {
			idx[c] = i
		}
		known = known || knownColumn(c)
	}
	if !known {
		return malformed("not a CBC event export: the first line names no event fields")
	}
	var cols []int
	for _, name := range []string{"device_name", "device_id", "hostname"} {
		if i, ok := idx[name]; ok {
			cols = append(cols, i)
		}
	}
	for {
		rec, err := cr.Read()
		g.mark = cr.InputOffset()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return csvMalformed(err)
		}
		host := ""
		for _, i := range cols {
			if i < len(rec) {
				if host = cleanHost(rec[i]); host != "" {
					break
				}
			}
		}
		s.add(host)
	}
}

func csvMalformed(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) && !errors.Is(err, errExportTooLarge) {
		return malformed("csv line %d: %v", pe.Line, pe.Err)
	}
	return err
}

// inflate counts decompressed bytes against the limit.
func (s *summary) inflate(r io.Reader) io.Reader {
	return &inflateReader{r: r, s: s}
}

type inflateReader struct {
	r io.Reader
	s *summary
}

func (i *inflateReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	i.s.inflated += int64(n)
	if i.s.inflated > i.s.lim.maxInflated {
		if i.s.ioErr == nil {
			i.s.ioErr = fmt.Errorf("%w: more than %d bytes once decompressed", errExportTooLarge, i.s.lim.maxInflated)
		}
		return n, i.s.ioErr
	}
	return n, err
}

// guardReader caps the raw export and records the input's own failures, so
// that a network error surfacing through a parser is not mistaken for a
// malformed export.
type guardReader struct {
	r    io.Reader
	left int64
	s    *summary
}

func (g *guardReader) Read(p []byte) (int, error) {
	if g.s.ioErr != nil {
		return 0, g.s.ioErr
	}
	if g.left <= 0 {
		// Probe for one more byte: exactly maxRaw bytes is fine.
		var one [1]byte
		n, err := g.r.Read(one[:])
		if n > 0 {
			g.s.ioErr = fmt.Errorf("%w: more than %d bytes", errExportTooLarge, g.s.lim.maxRaw)
			return 0, g.s.ioErr
		}
		if err != nil && err != io.EOF {
			g.s.ioErr = err
		}
		return 0, err
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	if err != nil && err != io.EOF {
		g.s.ioErr = err
	}
	return n, err
}
