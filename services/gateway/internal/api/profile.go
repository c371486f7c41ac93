package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/target"
)

// profileView is GET /v1/profile: the profile of the API key's environment, which it names. The
// signing secret has an endpoint of its own (GET /v1/profile/signing-secret), so that reading
// the profile never carries it; the API key is shown only when it is issued.
type profileView struct {
	CustomerID         string          `json:"customer_id"`
	Environment        environment.Env `json:"environment"`
	DefaultCallbackURL string          `json:"default_callback_url"`
	CallbackAuthKey    string          `json:"callback_auth_key"`
	AlertEmail         string          `json:"alert_email"`
	AutoPause          bool            `json:"auto_pause"`
}

func viewProfile(p customer.Profile) profileView {
	return profileView{CustomerID: p.ID, Environment: p.Env, DefaultCallbackURL: p.DefaultCallbackURL,
		CallbackAuthKey: p.CallbackAuthKey, AlertEmail: p.AlertEmail, AutoPause: p.AutoPause}
}

func (a *API) getProfile(w http.ResponseWriter, _ *http.Request, p customer.Profile) {
	writeJSON(w, http.StatusOK, viewProfile(p))
}

// validateDefaultURL accepts "" (no default) and the targets a worker can deliver to.
func validateDefaultURL(u string) *requestError {
	if _, err := target.Parse(u); err != nil {
		return badRequest("default_callback_url: %v", err)
	}
	return nil
}

// validateAlertEmail accepts "" (no alerts) and one bare email address.
func validateAlertEmail(s string) *requestError {
	if s == "" {
		return nil
	}
	if t, err := target.Parse(s); err != nil || t.Kind != target.Email || t.Address != s {
		return badRequest("alert_email: want one email address such as ops@example.com, or \"\" for no alerts")
	}
	return nil
}

func (a *API) patchProfile(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	var req struct {
		DefaultCallbackURL *string `json:"default_callback_url"`
		AlertEmail         *string `json:"alert_email"`
		AutoPause          *bool   `json:"auto_pause"`
	}
	if e := decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	if req.DefaultCallbackURL == nil && req.AlertEmail == nil && req.AutoPause == nil {
		writeError(w, http.StatusBadRequest, `want at least one of default_callback_url ("" clears it), alert_email ("" clears it), auto_pause`)
		return
	}
	if req.DefaultCallbackURL != nil {
		if e := validateDefaultURL(*req.DefaultCallbackURL); e != nil {
			writeError(w, e.code, e.msg)
			return
		}
	}
	if req.AlertEmail != nil {
		if e := validateAlertEmail(*req.AlertEmail); e != nil {
			writeError(w, e.code, e.msg)
			return
		}
	}
	updated, err := p, error(nil)
	if req.DefaultCallbackURL != nil {
		updated, err = a.Customers.SetDefaultCallbackURL(r.Context(), p.ID, p.Env, *req.DefaultCallbackURL)
	}
	if err == nil && (req.AlertEmail != nil || req.AutoPause != nil) {
		updated, err = a.Customers.SetAlerts(r.Context(), p.ID, p.Env, req.AlertEmail, req.AutoPause)
	}
	if !a.profileWritten(r.Context(), w, p.ID, err) {
		return
	}
	writeJSON(w, http.StatusOK, viewProfile(updated))
}

func (a *API) rotateCallbackAuthKey(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	updated, err := a.Customers.RotateCallbackAuthKey(r.Context(), p.ID, p.Env)
	if !a.profileWritten(r.Context(), w, p.ID, err) {
		return
	}
	writeJSON(w, http.StatusOK, viewProfile(updated))
}

type signingSecretView struct {
	CustomerID    string          `json:"customer_id"`
	Environment   environment.Env `json:"environment"`
	SigningSecret string          `json:"signing_secret"`
	// PreviousSecretExpiresAt ends the overlap during which callbacks carry a signature made
	// with the previous secret as well.
	PreviousSecretExpiresAt time.Time `json:"previous_secret_expires_at"`
	Message                 string    `json:"message"`
}

func (a *API) rotateSigningSecret(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	updated, err := a.Customers.RotateSigningSecret(r.Context(), p.ID, p.Env)
	if !a.profileWritten(r.Context(), w, p.ID, err) {
		return
	}
	writeJSON(w, http.StatusOK, signingSecretView{
		CustomerID:              updated.ID,
		Environment:             updated.Env,
		SigningSecret:           updated.SigningSecret,
		PreviousSecretExpiresAt: updated.PreviousSecretEnds.UTC(),
		Message: "This is your new signing secret (GET /v1/profile/signing-secret shows it again). Until previous_secret_expires_at (24 hours), every " +
			"callback's webhook-signature carries two v1 signatures, one made with this secret and one " +
			"with the previous secret, so a verifier using either accepts it: switch your verifier to " +
			"this secret before then. Rotating again within the 24 hours retires the older secret at once.",
	})
}

// signingSecretShownView is GET /v1/profile/signing-secret.
type signingSecretShownView struct {
	CustomerID    string          `json:"customer_id"`
	Environment   environment.Env `json:"environment"`
	SigningSecret string          `json:"signing_secret"`
	// PreviousSecretExpiresAt is set while callbacks still carry a signature made with the
	// previous secret as well (the 24 hours after a rotation).
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at"`
}

// getSigningSecret shows the current signing secret to the authenticated customer (the
// dashboard's "reveal"). The API key can rotate the secret and read the new one anyway, so
// showing the current one grants nothing more, and it lets a customer set up another verifier
// without rotating. The previous secret is never shown.
func (a *API) getSigningSecret(w http.ResponseWriter, _ *http.Request, p customer.Profile) {
	v := signingSecretShownView{CustomerID: p.ID, Environment: p.Env, SigningSecret: p.SigningSecret}
	if p.PreviousSecret != "" && a.now().Before(p.PreviousSecretEnds) {
		ends := p.PreviousSecretEnds.UTC()
		v.PreviousSecretExpiresAt = &ends
	}
	writeJSON(w, http.StatusOK, v)
}

type apiKeyView struct {
	CustomerID  string          `json:"customer_id"`
	Environment environment.Env `json:"environment"`
	APIKey      string          `json:"api_key"`
	Message     string          `json:"message"`
}

func (a *API) rotateAPIKey(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	creds, err := a.Customers.RotateAPIKey(r.Context(), p.ID, p.Env)
	if !a.profileWritten(r.Context(), w, p.ID, err) {
		return
	}
	writeJSON(w, http.StatusOK, apiKeyView{
		CustomerID:  p.ID,
		Environment: p.Env,
		APIKey:      creds.APIKey,
		Message:     "This key is shown only once. The previous " + p.Env.String() + " API key no longer works.",
	})
}

// profileWritten answers a failed profile write and reports whether the write succeeded; after
// a successful one it tells the workers to drop their cached copy.
func (a *API) profileWritten(ctx context.Context, w http.ResponseWriter, customerID string, err error) bool {
	switch {
	case errors.Is(err, customer.ErrNotFound):
		// Deleted between authentication and now: the key no longer names a customer.
		w.Header().Set("WWW-Authenticate", basicChallenge)
		writeError(w, http.StatusUnauthorized, "invalid API key")
		return false
	case err != nil:
		a.Log.Warn("profile write failed", zap.String("customer_id", customerID), zap.Error(err))
		unavailable(w)
		return false
	}
	a.announce(ctx, customerID)
	return true
}

// announce is best effort: the change is stored, and a worker that misses the announcement
// still drops its cached profile when the cache entry expires (PROFILE_CACHE_TTL, seconds).
func (a *API) announce(ctx context.Context, customerID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := a.Announcer.ProfileChanged(ctx, customerID); err != nil {
		a.Log.Warn("announcing a profile change failed; workers see it when their cache expires",
			zap.String("customer_id", customerID), zap.Error(err))
	}
}

func (a *API) createCustomer(w http.ResponseWriter, r *http.Request) {
	var req struct {
		CustomerID         string `json:"customer_id"`
		DefaultCallbackURL string `json:"default_callback_url"`
	}
	if e := decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	if !event.ValidCustomerID(req.CustomerID) {
		writeError(w, http.StatusBadRequest, "customer_id: want 1 to 64 characters of A-Z a-z 0-9 _ -")
		return
	}
	if e := validateDefaultURL(req.DefaultCallbackURL); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	c, err := a.Customers.Create(r.Context(), req.CustomerID, req.DefaultCallbackURL)
	switch {
	case errors.Is(err, customer.ErrExists):
		writeError(w, http.StatusConflict, "customer already exists")
		return
	case err != nil:
		a.Log.Warn("creating a customer failed", zap.String("customer_id", req.CustomerID), zap.Error(err))
		unavailable(w)
		return
	}
	if info := infoFrom(r.Context()); info != nil {
		info.customerID = c.Live.ID
	}
	a.announce(r.Context(), c.Live.ID)
	writeJSON(w, http.StatusCreated, c.Answer())
}

// testEnvironmentView is the answer of POST /admin/v1/customers/{customerId}/test-environment.
type testEnvironmentView struct {
	CustomerID          string `json:"customer_id"`
	TestAPIKey          string `json:"test_api_key"`
	TestCallbackAuthKey string `json:"test_callback_auth_key"`
	TestSigningSecret   string `json:"test_signing_secret"`
	DefaultCallbackURL  string `json:"default_callback_url"`
	Message             string `json:"message"`
}

// enableTestEnvironment is the one-off step for a customer created before test environments
// existed: it makes the test environment if there is none yet (the live one is not touched) and
// issues a test API key. Run again, it replaces the test API key only.
func (a *API) enableTestEnvironment(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("customerId")
	if !event.ValidCustomerID(id) {
		writeError(w, http.StatusNotFound, "customer not found")
		return
	}
	p, creds, err := a.Customers.EnableTest(r.Context(), id)
	switch {
	case errors.Is(err, customer.ErrNotFound):
		writeError(w, http.StatusNotFound, "customer not found")
		return
	case err != nil:
		a.Log.Warn("enabling a test environment failed", zap.String("customer_id", id), zap.Error(err))
		unavailable(w)
		return
	}
	if info := infoFrom(r.Context()); info != nil {
		info.customerID, info.environment = id, environment.Test
	}
	a.announce(r.Context(), id)
	writeJSON(w, http.StatusOK, testEnvironmentView{
		CustomerID:          id,
		TestAPIKey:          creds.APIKey,
		TestCallbackAuthKey: p.CallbackAuthKey,
		TestSigningSecret:   p.SigningSecret,
		DefaultCallbackURL:  p.DefaultCallbackURL,
		Message:             "This test API key is shown only once; any earlier test API key no longer works. The live environment is unchanged.",
	})
}
