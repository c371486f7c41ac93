// Package docs keeps the repository's documentation honest: every relative link and anchor in
// every Markdown file resolves, the configuration reference in docs/operations.md lists exactly
// the environment variables the Go code reads, every `go tool task <name>` the docs mention is a
// task of Taskfile.yml, and docs/api.md documents exactly the operations of schemas/openapi.json.
package docs

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/yuin/goldmark"
	gast "github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"
	"gopkg.in/yaml.v3"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// skipDir: folders that hold no documentation of the repository's own (build output, the local
// stack's state, fuzz corpora, dependencies a tool may have fetched).
func skipDir(name string) bool {
	return name == ".git" || name == ".stack" || name == "bin" || name == "node_modules" || name == "testdata"
}

// files returns the repository's files whose names end in ext, relative to the root.
func files(t *testing.T, ext string) []string {
	t.Helper()
	root := repoRoot()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ext) {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no %s file found under %s", ext, root)
	}
	return out
}

func read(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mdDoc is one parsed Markdown file: its links and the anchors of its headings.
type mdDoc struct {
	links    []string
	anchors  map[string]bool
	headings []string
}

var markdown = goldmark.New(goldmark.WithExtensions(extension.GFM))

func parseMarkdown(src []byte) mdDoc {
	doc := mdDoc{anchors: map[string]bool{}}
	seen := map[string]int{}
	root := markdown.Parser().Parse(text.NewReader(src))
	_ = gast.Walk(root, func(n gast.Node, entering bool) (gast.WalkStatus, error) {
		if !entering {
			return gast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *gast.Link:
			doc.links = append(doc.links, string(n.Destination))
		case *gast.Image:
			doc.links = append(doc.links, string(n.Destination))
		case *gast.Heading:
			title := plainText(n, src)
			doc.headings = append(doc.headings, strings.Repeat("#", n.Level)+" "+title)
			slug := githubSlug(title)
			if k := seen[slug]; k > 0 {
				doc.anchors[slug+"-"+strconv.Itoa(k)] = true
			} else {
				doc.anchors[slug] = true
			}
			seen[slug]++
		}
		return gast.WalkContinue, nil
	})
	return doc
}

// plainText is a heading's text as GitHub reads it for the anchor: the text of every inline,
// code spans included, without the Markdown around it.
func plainText(n gast.Node, src []byte) string {
	var b strings.Builder
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		switch c := c.(type) {
		case *gast.Text:
			b.Write(c.Segment.Value(src))
			if c.SoftLineBreak() || c.HardLineBreak() {
				b.WriteByte(' ')
			}
		case *gast.String:
			b.Write(c.Value)
		default:
			b.WriteString(plainText(c, src))
		}
	}
	return b.String()
}

// githubSlug is the anchor GitHub gives a heading: lower case, punctuation dropped (but - and _),
// each space a hyphen.
func githubSlug(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(title)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGithubSlug(t *testing.T) {
	for title, want := range map[string]string{
		"Retries and schedule":               "retries-and-schedule",
		"`webhook-id` without `Nats-Msg-Id`": "webhook-id-without-nats-msg-id",
		"Redis away (runbook)":               "redis-away-runbook",
		"What’s signed: HMAC-SHA256":         "whats-signed-hmac-sha256",
	} {
		if got := githubSlug(title); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", title, got, want)
		}
	}
}

func TestMarkdown_relative_links_and_anchors_resolve(t *testing.T) {
	root := repoRoot()
	docs := map[string]mdDoc{}
	for _, rel := range files(t, ".md") {
		docs[rel] = parseMarkdown(read(t, rel))
	}
	checked := 0
	for rel, doc := range docs {
		for _, link := range doc.links {
			u, err := url.Parse(link)
			if err != nil {
				t.Errorf("%s: link %q does not parse: %v", rel, link, err)
				continue
			}
			if u.Scheme != "" || u.Host != "" {
				continue // the web: not checked here
			}
			checked++
			target := rel
			if u.Path != "" {
				target = filepath.Clean(filepath.Join(filepath.Dir(rel), u.Path))
				if strings.HasPrefix(target, "..") {
					t.Errorf("%s: link %q leaves the repository", rel, link)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, target)); err != nil {
					t.Errorf("%s: link %q: %s does not exist", rel, link, target)
					continue
				}
			}
			if u.Fragment == "" {
				continue
			}
			td, ok := docs[target]
			if !ok {
				t.Errorf("%s: link %q has an anchor into %s, which is not Markdown", rel, link, target)
				continue
			}
			if !td.anchors[u.Fragment] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", rel, link, target, u.Fragment)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found at all: the parser is not seeing the links")
	}
}

// section returns the lines of the Markdown section headed by heading (a line such as
// "## Configuration"), up to the next heading of the same or a higher level.
func section(t *testing.T, src, heading string) []string {
	t.Helper()
	level := strings.IndexByte(heading, ' ')
	var out []string
	in := false
	fence := false
	for _, line := range strings.Split(src, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if !fence && strings.HasPrefix(line, "#") {
			l := strings.IndexByte(line, ' ')
			if in && l > 0 && l <= level && strings.Trim(line[:l], "#") == "" {
				break
			}
			if strings.TrimSpace(line) == heading {
				in = true
				continue
			}
		}
		if in {
			out = append(out, line)
		}
	}
	if !in {
		t.Fatalf("no section %q", heading)
	}
	return out
}

var envName = regexp.MustCompile("`([A-Z][A-Z0-9_]*[A-Z0-9])`")

// documentedVariables: the names in the first column of the tables of the configuration
// reference ("`LOG_FORMAT` / `LOG_LEVEL`" names two).
func documentedVariables(t *testing.T) map[string]bool {
	t.Helper()
	vars := map[string]bool{}
	for _, line := range section(t, string(read(t, "docs/operations.md")), "## Configuration") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(strings.TrimSpace(line), "|") || len(cells) < 3 {
			continue
		}
		for _, m := range envName.FindAllStringSubmatch(cells[1], -1) {
			vars[m[1]] = true
		}
	}
	return vars
}

// readerMethods are the methods of pkg/env's Reader whose first argument is a variable's name.
func readerMethods(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot(), "pkg/env/env.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || !fn.Name.IsExported() || fn.Type.Params.NumFields() == 0 {
			continue
		}
		if first := fn.Type.Params.List[0]; len(first.Names) > 0 && first.Names[0].Name == "name" {
			methods[fn.Name.Name] = true
		}
	}
	if len(methods) == 0 {
		t.Fatal("pkg/env's Reader has no method taking a variable's name: the scan below would find nothing")
	}
	return methods
}

// passedThrough: the system's own variables, which test helpers hand on to the processes they
// start; they configure nothing of ours.
var passedThrough = map[string]bool{"PATH": true, "HOME": true}

// readVariables scans the Go source for the environment variables it reads: os.Getenv and
// os.LookupEnv, a local getenv helper, and the env.Reader's methods, each called with the
// variable's name as a string literal. Test files count too: their variables are knobs people
// set (CHROMIUM_PATH, TEST_REDIS_URL, …).
func readVariables(t *testing.T) map[string][]string {
	t.Helper()
	methods := readerMethods(t)
	vars := map[string][]string{}
	fset := token.NewFileSet()
	for _, rel := range files(t, ".go") {
		if strings.HasPrefix(rel, filepath.Join("pkg", "env")+string(filepath.Separator)) {
			continue // the reader itself, and its tests of made-up names
		}
		f, err := parser.ParseFile(fset, filepath.Join(repoRoot(), rel), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			reads := false
			switch fun := call.Fun.(type) {
			case *ast.Ident:
				reads = fun.Name == "getenv"
			case *ast.SelectorExpr:
				pkg, _ := fun.X.(*ast.Ident)
				reads = pkg != nil && pkg.Name == "os" && (fun.Sel.Name == "Getenv" || fun.Sel.Name == "LookupEnv") ||
					methods[fun.Sel.Name]
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !reads || !ok || lit.Kind != token.STRING {
				return true
			}
			name, err := strconv.Unquote(lit.Value)
			if err == nil && envName.MatchString("`"+name+"`") && !passedThrough[name] {
				vars[name] = append(vars[name], fset.Position(lit.Pos()).String())
			}
			return true
		})
	}
	return vars
}

func TestConfiguration_reference_lists_exactly_the_variables_the_code_reads(t *testing.T) {
	documented := documentedVariables(t)
	read := readVariables(t)
	// The scan must find the variables every service reads, or it is not scanning anything.
	for _, v := range []string{"NATS_URL", "REDIS_URL", "CALLBACK_RETRY_SCHEDULE", "GATEWAY_ADDR"} {
		if read[v] == nil {
			t.Fatalf("the source scan did not find %s: it is broken", v)
		}
	}
	for name, where := range read {
		if !documented[name] {
			t.Errorf("%s is read by the code (%s) but missing from the configuration reference in docs/operations.md",
				name, strings.Join(where, ", "))
		}
	}
	for name := range documented {
		if read[name] == nil {
			t.Errorf("%s is in the configuration reference of docs/operations.md, but no code reads it", name)
		}
	}
}

var taskMention = regexp.MustCompile(`go tool task ([a-z][a-z0-9:_-]*)`)

func TestDocs_name_only_tasks_that_exist(t *testing.T) {
	var taskfile struct {
		Tasks map[string]any `yaml:"tasks"`
	}
	if err := yaml.Unmarshal(read(t, "Taskfile.yml"), &taskfile); err != nil {
		t.Fatal(err)
	}
	if len(taskfile.Tasks) == 0 {
		t.Fatal("Taskfile.yml has no tasks")
	}
	mentioned := 0
	for _, rel := range append(files(t, ".md"), "scripts/stack.sh", ".ci/run") {
		for _, m := range taskMention.FindAllStringSubmatch(string(read(t, rel)), -1) {
			mentioned++
			if _, ok := taskfile.Tasks[m[1]]; !ok {
				t.Errorf("%s mentions `go tool task %s`, which Taskfile.yml does not have", rel, m[1])
			}
		}
	}
	if mentioned == 0 {
		t.Fatal("no `go tool task <name>` found in the docs: the README must name the two commands")
	}
}

var operationHeading = regexp.MustCompile("^#{2,4} `?(GET|POST|PUT|PATCH|DELETE) (/[^ `]*)`?")

func TestAPI_doc_covers_exactly_the_OpenAPI_operations(t *testing.T) {
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(read(t, "schemas/openapi.json"), &spec); err != nil {
		t.Fatal(err)
	}
	inSpec := map[string]bool{}
	for path, ops := range spec.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	inDoc := map[string]bool{}
	for _, h := range parseMarkdown(read(t, "docs/api.md")).headings {
		if m := operationHeading.FindStringSubmatch(h); m != nil {
			inDoc[m[1]+" "+m[2]] = true
		}
	}
	for _, op := range sortedKeys(inSpec) {
		if !inDoc[op] {
			t.Errorf("%s is in schemas/openapi.json but has no heading in docs/api.md", op)
		}
	}
	for _, op := range sortedKeys(inDoc) {
		if !inSpec[op] {
			t.Errorf("docs/api.md documents %s, which schemas/openapi.json does not have", op)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
