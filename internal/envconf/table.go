package envconf

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says how a variable's value is read.
type Kind int

// The kinds of variables.
const (
	Text     Kind = iota // any string (Str, Optional, Required, Secret)
	List                 // comma-separated, blanks dropped (List)
	Int                  // a decimal integer (Int)
	Float                // a decimal number (Float)
	Duration             // a Go duration: 500ms, 30s, 4h (Duration)
	Bool                 // true or false (Bool)
)

func (k Kind) String() string {
	switch k {
	case Text:
		return "text"
	case List:
		return "list"
	case Int:
		return "integer"
	case Float:
		return "number"
	case Duration:
		return "duration"
	case Bool:
		return "boolean"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Var declares one environment variable.
type Var struct {
	Name string
	Kind Kind
	// Default is the value used when the variable is unset or empty, as an
	// operator would write it ("30s", "1000", "a,b"); "" is none.
	Default string
	// Min and Max bound Int, Float and Duration values (inclusive), in the
	// same notation. Both are required for those kinds.
	Min, Max string
	// Secret: the value may instead come from the file named by
	// <Name>_FILE; it is never printed. Text only.
	Secret bool
	// Required: unset or empty is a problem. (Variables required only in
	// some configurations, such as a vendor's once any of its group is set,
	// are not marked: the code asks for them with Required/RequiredSecret.)
	Required bool
}

// Row documents variables that share one meaning: one row of the README's
// Configuration table and one entry of a command's --help.
type Row struct {
	Vars []Var
	// Default is the default column (Markdown) when the Vars' own defaults
	// do not say it all ("hostname", "unset = off"); empty: each Var's
	// Default, "— (required)" or "—".
	Default string
	// Doc is the meaning (Markdown).
	Doc string
}

// Table is everything a command reads from the environment, in the order
// it is documented.
type Table []Row

// Lookup returns the declaration of name.
func (t Table) Lookup(name string) (Var, bool) {
	for _, r := range t {
		for _, v := range r.Vars {
			if v.Name == name {
				return v, true
			}
		}
	}
	return Var{}, false
}

// Names returns every declared variable, in table order.
func (t Table) Names() []string {
	var out []string
	for _, r := range t {
		for _, v := range r.Vars {
			out = append(out, v.Name)
		}
	}
	return out
}

// Secrets returns the declared secrets, in table order.
func (t Table) Secrets() []string {
	var out []string
	for _, r := range t {
		for _, v := range r.Vars {
			if v.Secret {
				out = append(out, v.Name)
			}
		}
	}
	return out
}

var varName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*[A-Z0-9]$`)

// Check reports every mistake in the table itself: a bad or repeated name
// (a secret's <NAME>_FILE counts), a row without a meaning, a default or
// bound that does not parse, a default outside its bounds, and a declared
// default the row's documentation does not mention.
func (t Table) Check() error {
	var errs []error
	seen := map[string]bool{}
	claim := func(name string) {
		if seen[name] {
			errs = append(errs, fmt.Errorf("%s: declared twice", name))
		}
		seen[name] = true
	}
	for i, r := range t {
		if len(r.Vars) == 0 || strings.TrimSpace(r.Doc) == "" {
			errs = append(errs, fmt.Errorf("row %d: needs variables and a meaning", i))
		}
		for _, v := range r.Vars {
			if !varName.MatchString(v.Name) {
				errs = append(errs, fmt.Errorf("%q: not an environment variable name", v.Name))
			}
			claim(v.Name)
			if v.Secret {
				claim(v.Name + "_FILE")
				if v.Kind != Text {
					errs = append(errs, fmt.Errorf("%s: a secret must be Text", v.Name))
				}
			}
			if err := v.check(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			}
			if v.Default != "" && r.Default != "" && !strings.Contains(r.Default+" "+r.Doc, v.Default) {
				errs = append(errs, fmt.Errorf("%s: row documents its default %q nowhere", v.Name, v.Default))
			}
		}
	}
	return errors.Join(errs...)
}

// check parses the default and bounds (the getters panic on a bad one).
func (v Var) check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	switch v.Kind {
	case Int:
		def, lo, hi := v.ints()
		if lo > hi || (v.Default != "" && (def < lo || def > hi)) {
			return fmt.Errorf("default %q outside [%s, %s]", v.Default, v.Min, v.Max)
		}
	case Float:
		def, lo, hi := v.floats()
		if lo > hi || (v.Default != "" && (def < lo || def > hi)) {
			return fmt.Errorf("default %q outside [%s, %s]", v.Default, v.Min, v.Max)
		}
	case Duration:
		def, lo, hi := v.durations()
		if lo > hi || (v.Default != "" && (def < lo || def > hi)) {
			return fmt.Errorf("default %q outside [%s, %s]", v.Default, v.Min, v.Max)
		}
	case Bool:
		v.bool()
	case Text, List:
		if v.Min != "" || v.Max != "" {
			return errors.New("bounds on a " + v.Kind.String())
		}
	default:
		return fmt.Errorf("unknown kind %d", v.Kind)
	}
	return nil
}

// must panics on a declaration error: the table is code, checked by
// Table.Check in the commands' tests.
func must[T any](x T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("envconf: bad declaration: %v", err))
	}
	return x
}

func (v Var) ints() (def, lo, hi int) {
	p := func(s string) int { return must(strconv.Atoi(s)) }
	if v.Default != "" {
		def = p(v.Default)
	}
	return def, p(v.Min), p(v.Max)
}

func (v Var) floats() (def, lo, hi float64) {
	p := func(s string) float64 { return must(strconv.ParseFloat(s, 64)) }
	if v.Default != "" {
		def = p(v.Default)
	}
	return def, p(v.Min), p(v.Max)
}

func (v Var) durations() (def, lo, hi time.Duration) {
	p := func(s string) time.Duration { return must(time.ParseDuration(s)) }
	if v.Default != "" {
		def = p(v.Default)
	}
	return def, p(v.Min), p(v.Max)
}

func (v Var) bool() bool {
	if v.Default == "" {
		return false
	}
	return must(strconv.ParseBool(v.Default))
}

// FormatDuration writes d as an operator would: 1m, 4h, 1h30m, 500ms.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// shownDefault is the default column of r (Markdown).
func (r Row) shownDefault() string {
	if r.Default != "" {
		return r.Default
	}
	parts := make([]string, len(r.Vars))
	same := true
	for i, v := range r.Vars {
		switch {
		case v.Default != "":
			parts[i] = "`" + v.Default + "`"
		case v.Required:
			parts[i] = "— (required)"
		default:
			parts[i] = "—"
		}
		same = same && parts[i] == parts[0]
	}
	if same {
		return parts[0]
	}
	return strings.Join(parts, ", ")
}

// names is the variable column of r (Markdown).
func (r Row) names() string {
	parts := make([]string, len(r.Vars))
	for i, v := range r.Vars {
		parts[i] = "`" + v.Name + "`"
		if v.Secret {
			parts[i] += " (secret)"
		}
	}
	return strings.Join(parts, ", ")
}

// Markdown renders the table as the README's Configuration table: a header
// and one line per row.
func (t Table) Markdown() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n| --- | --- | --- |\n")
	for _, r := range t {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.names(), cell(r.shownDefault()), cell(r.Doc))
	}
	return b.String()
}

// cell keeps text inside one Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.Join(strings.Fields(s), " "), "|", `\|`)
}

var mdLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// plainText turns the Markdown of a cell into text for a terminal.
func plainText(s string) string {
	s = mdLink.ReplaceAllString(s, "$1")
	s = strings.ReplaceAll(s, "`", "")
	s = strings.ReplaceAll(s, "**", "")
	return strings.Join(strings.Fields(s), " ")
}

// Help writes the table for a terminal: each row's variables, its default
// and its meaning, wrapped to width columns.
func (t Table) Help(w io.Writer, width int) error {
	var b strings.Builder
	for _, r := range t {
		b.WriteString(wrap(plainText(r.names()), "", "  ", width))
		b.WriteString(wrap("default: "+plainText(r.shownDefault()), "    ", "    ", width))
		b.WriteString(wrap(plainText(r.Doc), "    ", "    ", width))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap breaks s into lines of at most width columns (a longer word has a
// line of its own), the first starting with first, the others with rest.
func wrap(s, first, rest string, width int) string {
	var b strings.Builder
	indent := first
	line := indent
	for _, word := range strings.Fields(s) {
		if line != indent && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > width {
			b.WriteString(line + "\n")
			indent = rest
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	if line != indent {
		b.WriteString(line + "\n")
	}
	return b.String()
}

// HelpAsked reports whether a command line asks for help (-h, -help or
// --help before any "--"): the commands then print their usage and the
// variables they read, and exit 0 without reading the environment.
func HelpAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}
