// Command promql-check parses PromQL expressions with Prometheus' own parser
// (github.com/prometheus/prometheus/promql/parser, the version go.mod pins) and
// prints, for each, the metric names its selectors read, so a test can hold
// them against what the engines really export.
//
// Input on stdin: a JSON object {"id": "expression", ...}. Output on stdout: a
// JSON object {"id": {"metrics": ["name", ...], "error": "..."}}. A selector
// without one fixed metric name (`{__name__=~"..."}`) is an error: its names
// could not be checked. Exit status 0 even when expressions fail to parse (the
// caller reports them all at once); 2 on bad input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

func check(p parser.Parser, input string) result {
	expr, err := p.ParseExpr(input)
	if err != nil {
		return result{Metrics: []string{}, Error: err.Error()}
	}
	names := map[string]bool{}
	var problem string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" && problem == "" {
			problem = fmt.Sprintf("selector %s has no fixed metric name", vs.String())
		}
		if name != "" {
			names[name] = true
		}
		return nil
	})
	out := result{Metrics: make([]string, 0, len(names)), Error: problem}
	for n := range names {
		out.Metrics = append(out.Metrics, n)
	}
	sort.Strings(out.Metrics)
	return out
}

func main() {
	var exprs map[string]string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: stdin must be a JSON object of id -> expression: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	out := make(map[string]result, len(exprs))
	for id, e := range exprs {
		out[id] = check(p, e)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: %v\n", err)
		os.Exit(2)
	}
}
