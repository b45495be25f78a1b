package sophos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// Decoders of Sophos response bodies. Each one is strict about what the
// guide makes explicit (field names, JSON types of the fields we use) and
// tolerant of the rest: unknown fields are ignored, IDs may be numbers or
// strings, optional fields may be absent or null. They are fuzzed.

// errMalformed marks a body that cannot be understood.
var errMalformed = vendorhttp.ErrMalformed

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
}

// Bounds on what a token response may claim.
const (
	// defaultTokenTTL is assumed when expires_in is absent or not positive.
	// Sophos documents 3600 s; assuming less only costs an earlier refresh.
	defaultTokenTTL = 15 * time.Minute
	maxTokenTTL     = 24 * time.Hour
	maxTokenLen     = 16 << 10
	maxIDLen        = 256
)

// token is a decoded client-credentials grant response.
type token struct {
	access string
	ttl    time.Duration
}

// decodeToken decodes {"access_token","token_type":"bearer","expires_in",...}.
func decodeToken(body []byte) (token, error) {
	var raw struct {
		AccessToken *string         `json:"access_token"`
		TokenType   *string         `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return token{}, err
	}
	if raw.AccessToken == nil || *raw.AccessToken == "" {
		return token{}, malformed("no access_token")
	}
	tok := *raw.AccessToken
	if len(tok) > maxTokenLen || strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		// It goes into an Authorization header: printable ASCII only.
		return token{}, malformed("access_token is not a printable token")
	}
	if raw.TokenType != nil && *raw.TokenType != "" && !strings.EqualFold(*raw.TokenType, "bearer") {
		return token{}, malformed("token_type is not bearer") // not quoted: a hostile service could put anything there
	}
	ttl := defaultTokenTTL
	if secs, ok, err := number(raw.ExpiresIn); err != nil {
		return token{}, malformed("expires_in: %v", err)
	} else if ok && secs > 0 {
		ttl = time.Duration(math.Min(secs, maxTokenTTL.Seconds()) * float64(time.Second))
	}
	return token{access: tok, ttl: ttl}, nil
}

// runState is a decoded query run: the body of the start and status
// responses and one item of a run listing.
type runState struct {
	ID         string
	Status     string
	Result     string
	CreatedAt  string
	ExpiresAt  string
	FinishedAt string
	// Name is the run's name; HasName says the body carried the field at
	// all (listings may leave it out).
	Name    string
	HasName bool
	// Template, From and To are what the run searches, when the body says.
	Template, From, To string
}

// rawRun is the JSON shape of a run.
type rawRun struct {
	ID         json.RawMessage `json:"id"`
	Status     *string         `json:"status"`
	Result     *string         `json:"result"`
	CreatedAt  json.RawMessage `json:"createdAt"`
	ExpiresAt  json.RawMessage `json:"expiresAt"`
	FinishedAt json.RawMessage `json:"finishedAt"`
	Name       json.RawMessage `json:"name"`
	Template   json.RawMessage `json:"template"`
	From       json.RawMessage `json:"from"`
	To         json.RawMessage `json:"to"`
}

// decodeRun decodes {"id","createdAt","expiresAt","finishedAt","result",
// "status","name","template","from","to",...}. It requires at least one of
// status and result; the caller checks the ID where it needs one.
func decodeRun(body []byte) (runState, error) {
	var raw rawRun
	if err := unmarshalObject(body, &raw); err != nil {
		return runState{}, err
	}
	return raw.state()
}

func (raw *rawRun) state() (runState, error) {
	var out runState
	var err error
	if out.ID, err = flexString(raw.ID); err != nil {
		return runState{}, malformed("id: %v", err)
	}
	if out.ID != "" && !validID(out.ID) {
		return runState{}, malformed("id is not a usable run ID")
	}
	if raw.Status != nil {
		out.Status = *raw.Status
	}
	if raw.Result != nil {
		out.Result = *raw.Result
	}
	if out.Status == "" && out.Result == "" {
		return runState{}, malformed("run has neither status nor result")
	}
	// The rest is informational or compared, never trusted: keep strings,
	// drop other types.
	out.CreatedAt, _ = flexString(raw.CreatedAt)
	out.ExpiresAt, _ = flexString(raw.ExpiresAt)
	out.FinishedAt, _ = flexString(raw.FinishedAt)
	out.HasName = len(bytes.TrimSpace(raw.Name)) > 0 && string(bytes.TrimSpace(raw.Name)) != "null"
	out.Name, _ = flexString(raw.Name)
	out.Template, _ = flexString(raw.Template)
	out.From, _ = flexString(raw.From)
	out.To, _ = flexString(raw.To)
	return out, nil
}

// runList is a decoded page of GET /queries/runs.
type runList struct {
	Items []runState
	// Pages: current page, page size, total pages (pageTotal=true), total
	// items; 0 when absent or not a positive number (Sophos's generated
	// examples carry negative ones).
	Current, Size, Total, ItemsTotal int
	// serverNow is the answer's Date header (zero when absent), localNow
	// when the answer arrived: together, Sophos's clock against ours.
	serverNow, localNow time.Time
}

// decodeRunList decodes {"items":[run...],"pages":{"current","size",
// "total","items","maxSize"}}. items must be a list (null counts as empty);
// an item that is not a usable run makes the page malformed, since Find
// could otherwise miss the run it looks for.
func decodeRunList(body []byte) (runList, error) {
	var raw struct {
		Items json.RawMessage `json:"items"`
		Pages *struct {
			Current, Size, Total, Items json.RawMessage
		} `json:"pages"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return runList{}, err
	}
	if raw.Items == nil {
		return runList{}, malformed("no items")
	}
	var items []*rawRun
	if err := json.Unmarshal(raw.Items, &items); err != nil {
		return runList{}, malformed("items is not a list of runs")
	}
	var out runList
	for i, it := range items {
		if it == nil {
			return runList{}, malformed("run %d is null", i)
		}
		r, err := it.state()
		if err == nil && r.ID == "" {
			err = malformed("no id")
		}
		if err != nil {
			return runList{}, malformed("run %d: %v", i, err)
		}
		out.Items = append(out.Items, r)
	}
	if raw.Pages != nil {
		out.Current = positive(raw.Pages.Current)
		out.Size = positive(raw.Pages.Size)
		out.Total = positive(raw.Pages.Total)
		out.ItemsTotal = positive(raw.Pages.Items)
	}
	return out, nil
}

// positive reads a JSON number (or numeric string) that should be a
// positive count; anything else is 0.
func positive(raw json.RawMessage) int {
	v, ok, err := number(raw)
	if err != nil || !ok || v < 1 || v > math.MaxInt32 {
		return 0
	}
	return int(v)
}

// apiError is what a Sophos error body says: {"error","message",
// "correlationId","code","createdAt","requestId","docUrl"}. code is a
// string in Sophos's collection and a number in answers SEKOIA recorded.
type apiError struct {
	Error, Message, Code, CorrelationID, RequestID string
}

func (a apiError) empty() bool { return a == apiError{} }

// Bounds on what is kept of an error body.
const (
	maxErrMessage = 300
	maxErrWord    = 80
)

var (
	errWordRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]*$`)
	errFieldRe   = regexp.MustCompile(`"(error|message|code|correlationId|requestId)"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9]+)`)
	errMessageOK = func(r rune) bool { return unicode.IsPrint(r) }
)

// decodeAPIError reads the error shape from body, which may be a whole body
// or a truncated snippet of one (a field cut off is left out). Every field
// is checked or trimmed: it ends up in an error message.
func decodeAPIError(body []byte) apiError {
	fields := map[string]string{}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(body), &raw); err == nil {
		for k, v := range raw {
			if s, err := flexString(v); err == nil {
				fields[k] = s
			}
		}
	} else {
		for _, m := range errFieldRe.FindAllSubmatch(body, 8) {
			if s, err := flexString(m[2]); err == nil {
				fields[string(m[1])] = s
			}
		}
	}
	word := func(s string) string {
		if len(s) > maxErrWord || !errWordRe.MatchString(s) {
			return ""
		}
		return s
	}
	msg := strings.Join(strings.FieldsFunc(fields["message"], func(r rune) bool { return !errMessageOK(r) || unicode.IsSpace(r) }), " ")
	return apiError{
		Error:         word(fields["error"]),
		Message:       truncate(msg, maxErrMessage),
		Code:          word(fields["code"]),
		CorrelationID: word(fields["correlationId"]),
		RequestID:     word(fields["requestId"]),
	}
}

// identityError is what the identity service's error says:
// {"errorCode","message","trackingId"}. Only the code and the tracking ID
// are kept: the message is free text the service fills in, and a service
// that quotes the request would quote the client secret.
type identityError struct {
	ErrorCode, TrackingID string
}

func decodeIdentityError(body []byte) identityError {
	var raw struct {
		ErrorCode  json.RawMessage `json:"errorCode"`
		TrackingID json.RawMessage `json:"trackingId"`
	}
	if unmarshalObject(body, &raw) != nil {
		return identityError{}
	}
	code, _ := flexString(raw.ErrorCode)
	id, _ := flexString(raw.TrackingID)
	word := func(s string) string {
		if len(s) > 64 || !identityWordRe.MatchString(s) {
			return ""
		}
		return s
	}
	return identityError{ErrorCode: word(code), TrackingID: word(id)}
}

// identityWordRe admits codes such as oauth.invalid_client_secret and
// UUIDs, and nothing a percent-, form- or base64-encoded secret needs
// (no %, +, / or =).
var identityWordRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// unmarshalObject decodes a JSON object into v; anything else is malformed.
func unmarshalObject(body []byte, v any) error {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return malformed("body is not a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return malformed("field %q has the wrong type", te.Field)
		}
		return malformed("invalid JSON")
	}
	return nil
}

// flexString reads a JSON string or number as a string; absent or null is
// "". Other types are an error.
func flexString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("invalid string")
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", errors.New("invalid number")
		}
		return n.String(), nil
	}
	return "", errors.New("neither a string nor a number")
}

// number reads a JSON number, or a string holding one. ok is false when the
// value is absent or null.
func number(raw json.RawMessage) (v float64, ok bool, err error) {
	s, err := flexString(raw)
	if err != nil || s == "" {
		return 0, false, err
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, errors.New("not a number")
	}
	return f, true, nil
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// validID accepts run IDs that are safe to put in a path segment (after
// escaping) and to log.
func validID(id string) bool {
	if len(id) > maxIDLen || id == "." || id == ".." {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || r == '/' || r == '\\' }) < 0
}

// resultsPage is a decoded page of results.
type resultsPage struct {
	Hosts   []string // one entry per row: meta_hostname, else endpoint_id, else ""
	NextKey string
	FromKey string
	// Read is how many bytes of the body the decoder consumed.
	Read int64
}

// Bounds on one results page.
const (
	// maxPageRows bounds the rows of one page: Sophos pages hold at most
	// 2000 (its maxSize); more is a broken or hostile server.
	maxPageRows = 10000
	// maxKeyLen bounds a page key: it goes into the next request's URL.
	maxKeyLen = 8 << 10
	// valueSlack is what the JSON decoder may read past a value's end
	// before it knows the value ended.
	valueSlack = 4 << 10
)

// errValueTooLarge is returned when one JSON value of a results page (a
// row, or any other top-level field) exceeds the cap.
var errValueTooLarge = errors.New("value larger than the cap")

// valueGuard is the reader under the results decoder: it refuses to read
// more than limit bytes past mark, the offset where the value being
// decoded starts. The decoder therefore never buffers more than about one
// capped value, however long the value on the wire is.
type valueGuard struct {
	r     io.Reader
	n     int64
	mark  int64
	limit int64
}

func (g *valueGuard) Read(p []byte) (int, error) {
	room := g.mark + g.limit - g.n
	if room <= 0 {
		return 0, errValueTooLarge
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// decodeResults reads {"items":[{...}],"metadata":{...},"pages":{"fromKey",
// "nextKey","size","maxSize"}} from r as a stream, keeping of each row only
// its host, and refusing (errValueTooLarge) any single value over maxValue
// bytes. items may be null, or absent when pages is there (Sophos's 2021
// example); pages and nextKey are optional (no key = last page). Other
// errors wrap errMalformed, or are r's own.
func decodeResults(r io.Reader, maxValue int64) (resultsPage, error) {
	g := &valueGuard{r: r, limit: maxValue + valueSlack}
	dec := json.NewDecoder(g)
	dec.UseNumber()
	var out resultsPage
	next := func() (json.Token, error) {
		g.mark = dec.InputOffset()
		return dec.Token()
	}
	fail := func(err error) (resultsPage, error) {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, errValueTooLarge), errors.Is(err, errMalformed):
			return resultsPage{}, err
		case errors.As(err, &se), errors.As(err, &te), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return resultsPage{}, malformed("results page: %v", err)
		}
		return resultsPage{}, err // the transport's
	}
	if tok, err := next(); err != nil {
		return fail(err)
	} else if tok != json.Delim('{') {
		return fail(malformed("body is not a JSON object"))
	}
	var sawItems, sawPages bool
	for {
		g.mark = dec.InputOffset()
		if !dec.More() {
			break
		}
		tok, err := next()
		if err != nil {
			return fail(err)
		}
		key, _ := tok.(string)
		switch key {
		case "items":
			if sawItems {
				return fail(malformed("items twice"))
			}
			sawItems = true
			if err := decodeRows(dec, g, &out); err != nil {
				return fail(err)
			}
		case "pages":
			sawPages = true
			var pages *struct {
				NextKey json.RawMessage `json:"nextKey"`
				FromKey json.RawMessage `json:"fromKey"`
			}
			g.mark = dec.InputOffset()
			if err := dec.Decode(&pages); err != nil {
				return fail(err)
			}
			if pages != nil {
				if out.NextKey, err = flexString(pages.NextKey); err != nil {
					return fail(malformed("pages.nextKey: %v", err))
				}
				out.FromKey, _ = flexString(pages.FromKey)
			}
		default:
			if err := skipValue(dec, g); err != nil {
				return fail(err)
			}
		}
	}
	if tok, err := next(); err != nil {
		return fail(err)
	} else if tok != json.Delim('}') {
		return fail(malformed("unterminated object"))
	}
	if _, err := next(); err != io.EOF {
		if err == nil {
			err = malformed("data after the results object")
		}
		return fail(err)
	}
	if !sawItems && !sawPages {
		return fail(malformed("no items"))
	}
	out.Read = g.n
	return out, nil
}

// decodeRows reads the items array (or null), one row at a time.
func decodeRows(dec *json.Decoder, g *valueGuard, out *resultsPage) error {
	g.mark = dec.InputOffset()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // items: null
	}
	if tok != json.Delim('[') {
		return malformed("items is not a list of rows")
	}
	for {
		g.mark = dec.InputOffset()
		if !dec.More() {
			break
		}
		if len(out.Hosts) >= maxPageRows {
			return malformed("more than %d rows in one page", maxPageRows)
		}
		var row *struct {
			Hostname   json.RawMessage `json:"meta_hostname"`
			EndpointID json.RawMessage `json:"endpoint_id"`
		}
		g.mark = dec.InputOffset()
		if err := dec.Decode(&row); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return malformed("items is not a list of rows")
			}
			return err
		}
		host := ""
		if row != nil { // a null row still counts as a row
			h, _ := flexString(row.Hostname)
			if h == "" {
				h, _ = flexString(row.EndpointID)
			}
			host = truncate(strings.TrimSpace(h), 255)
		}
		out.Hosts = append(out.Hosts, host)
	}
	g.mark = dec.InputOffset()
	_, err = dec.Token() // ]
	return err
}

// skipValue reads past one value token by token, so even a large field the
// driver does not use (metadata) is never held whole; each token is capped
// by the guard.
func skipValue(dec *json.Decoder, g *valueGuard) error {
	depth := 0
	for {
		g.mark = dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}
