package api

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"
	"strconv"
	"sync"
)

// The customer dashboard: one small page and its script and stylesheet, embedded in
// the binary. It holds no data of its own: every action is a call of the JSON API with the
// customer's API key, which the page keeps in sessionStorage and sends as HTTP Basic.

//go:embed web
var webFiles embed.FS

// dashboardCSP replaces the JSON answers' "default-src 'none'" on the dashboard's files: scripts,
// styles and API calls from this origin only, nothing inline, no form posts, no framing, and DOM
// sinks that take HTML refused (the page builds its DOM from text nodes only).
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'"

type webFile struct {
	body        []byte
	contentType string
	etag        string
}

var webTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

var dashboardFiles = sync.OnceValue(func() map[string]webFile {
	entries, err := webFiles.ReadDir("web")
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	files := make(map[string]webFile, len(entries))
	for _, e := range entries {
		ct, ok := webTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		b, err := webFiles.ReadFile("web/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		files[e.Name()] = webFile{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return files
})

// dashboardPage is GET /dashboard. The page itself is never cached: it is tiny, and a new
// gateway version takes effect at the next load.
func (a *API) dashboardPage(w http.ResponseWriter, r *http.Request) {
	serveWebFile(w, r, "index.html", "no-store")
}

// dashboardAsset is GET /dashboard/{asset}: the script, the stylesheet and the icon. Browsers
// may keep them but ask again each time (ETag, 304).
func (a *API) dashboardAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("asset")
	if name == "index.html" {
		writeError(w, http.StatusNotFound, "no such route")
		return
	}
	serveWebFile(w, r, name, "no-cache")
}

func serveWebFile(w http.ResponseWriter, r *http.Request, name, cacheControl string) {
	f, ok := dashboardFiles()[name]
	if !ok {
		writeError(w, http.StatusNotFound, "no such route")
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", f.etag)
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(f.body)
	}
}
