// Package envdoc keeps the README's Configuration table and the commands'
// envconf tables in step, for the commands' tests: Documented parses the
// variables the README documents (however many a row names), Update
// rewrites the generated table in place.
//
// The table follows the section's marker line (Marker) and is every line
// starting with "|" after it.
package envdoc

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Section is the README heading of the Configuration section.
const Section = "## Configuration"

// Marker is the comment line that precedes the generated table.
const Marker = "<!-- generated from cmd/worker/envtable.go (runVars): go test ./cmd/worker -run TestReadmeConfigurationTable -update -->"

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	envName    = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
)

// table returns the lines of the Configuration section's table and where
// they start in lines.
func table(lines []string) (start, end int, err error) {
	sec := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == Section {
			sec = i
			break
		}
	}
	if sec < 0 {
		return 0, 0, fmt.Errorf("no %q section", Section)
	}
	start = -1
	for i := sec + 1; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
		if strings.TrimSpace(lines[i]) == Marker {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return 0, 0, fmt.Errorf("no marker line %q in %q", Marker, Section)
	}
	end = start
	for end < len(lines) && strings.HasPrefix(lines[end], "|") {
		end++
	}
	if end-start < 3 {
		return 0, 0, errors.New("no table after the marker line")
	}
	return start, end, nil
}

// Documented returns every variable the README's Configuration table
// documents, in order: each backticked NAME in a row's first cell (a row may
// name several). A first cell naming a pattern (`<VENDOR>_RATE_LIMIT`) or
// nothing is an error: a check cannot expand it.
func Documented(readme string) ([]string, error) {
	lines := strings.Split(readme, "\n")
	start, end, err := table(lines)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, row := range lines[start+2 : end] { // header and rule
		cells := splitRow(row)
		if len(cells) != 3 {
			return nil, fmt.Errorf("row %q: want 3 cells, got %d", row, len(cells))
		}
		found := 0
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			if !envName.MatchString(m[1]) {
				return nil, fmt.Errorf("row %q: %q is not a variable name", row, m[1])
			}
			names = append(names, m[1])
			found++
		}
		if found == 0 {
			return nil, fmt.Errorf("row %q names no variable", row)
		}
	}
	return names, nil
}

// splitRow splits a Markdown table row into its cells, honouring \|.
func splitRow(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// Generated returns the README's generated table, as Table.Markdown writes
// it.
func Generated(readme string) (string, error) {
	lines := strings.Split(readme, "\n")
	start, end, err := table(lines)
	if err != nil {
		return "", err
	}
	return strings.Join(lines[start:end], "\n") + "\n", nil
}

// Update returns readme with its generated table replaced by markdown.
func Update(readme, markdown string) (string, error) {
	lines := strings.Split(readme, "\n")
	start, end, err := table(lines)
	if err != nil {
		return "", err
	}
	out := append(append(append([]string(nil), lines[:start]...),
		strings.Split(strings.TrimSuffix(markdown, "\n"), "\n")...), lines[end:]...)
	return strings.Join(out, "\n"), nil
}

// Diff compares what the README documents with what a command declares:
// undocumented are declared but not in the README, unread the other way
// round.
func Diff(documented, declared []string) (undocumented, unread []string) {
	doc, decl := map[string]bool{}, map[string]bool{}
	for _, n := range documented {
		doc[n] = true
	}
	for _, n := range declared {
		decl[n] = true
		if !doc[n] {
			undocumented = append(undocumented, n)
		}
	}
	for _, n := range documented {
		if !decl[n] {
			unread = append(unread, n)
		}
	}
	return undocumented, unread
}
