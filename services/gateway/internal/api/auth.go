package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
)

// customerHandler serves a request of an authenticated customer.
type customerHandler func(w http.ResponseWriter, r *http.Request, p customer.Profile)

const basicChallenge = `Basic realm="Refonte callbacks", charset="UTF-8"`

// authCustomer authenticates with HTTP Basic, the API key as username and an empty password
// (curl -u "$API_KEY:"). The store keeps only a hash of each key and compares in constant time.
func (a *API) authCustomer(h customerHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, password, ok := r.BasicAuth()
		if !ok || key == "" || password != "" {
			challenge(w, r)
			writeError(w, http.StatusUnauthorized,
				"authenticate with HTTP Basic: the API key as username and an empty password")
			return
		}
		p, err := a.Customers.Authenticate(r.Context(), key)
		if errors.Is(err, customer.ErrNotFound) {
			challenge(w, r)
			writeError(w, http.StatusUnauthorized, "invalid API key")
			return
		}
		if err != nil {
			a.Log.Warn("authentication lookup failed", zap.Error(err))
			unavailable(w)
			return
		}
		if info := infoFrom(r.Context()); info != nil {
			info.customerID = p.ID
			info.environment = p.Env
		}
		h(w, r, p)
	})
}

// challenge names the Basic scheme on a 401, except to the dashboard's own calls (marked with
// X-Requested-With: XMLHttpRequest): a browser answers a Basic challenge to a script's request
// with its native sign-in prompt, over the dashboard's own sign-in form.
func challenge(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Requested-With") != "XMLHttpRequest" {
		w.Header().Set("WWW-Authenticate", basicChallenge)
	}
}

// authAdmin checks the bearer token. Both sides are hashed first, so the comparison takes the
// same time whatever the length of the guess.
func (a *API) authAdmin(h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(a.cfg.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="Refonte callbacks admin"`)
			writeError(w, http.StatusUnauthorized, "invalid admin token")
			return
		}
		h.ServeHTTP(w, r)
	})
}
