// Refonte callbacks dashboard. Plain JavaScript, no dependency: every action is a call of the
// gateway's JSON API with the customer's API key, which lives in sessionStorage only and travels
// in the Authorization header (HTTP Basic, the key as username), never in a URL.
//
// A customer has a live and a test environment, each opened by its own API key. The page keeps
// one key per environment and the switch in the top bar picks which one every call uses, so a
// view only ever shows the data of the environment it names.
//
// The DOM is built from text nodes and attributes only, never by parsing HTML: task data, answers
// of customer endpoints and error messages can never become markup. The page's CSP enforces it
// (require-trusted-types-for 'script').
'use strict';

(() => {
  const KEYS = { live: 'refonte.apiKey.live', test: 'refonte.apiKey.test' };
  const ENV = 'refonte.environment';
  const ENV_NAMES = { live: 'Live', test: 'Test' };
  const PAGE_SIZE = 20;
  const $ = (id) => document.getElementById(id);

  const state = {
    profile: null,
    secret: null, // the signing secret, once revealed
    showAuth: false,
    showSecret: false,
    cursors: [], // cursors of the pages before the current one (for "Newer")
    pageCursor: '',
    poll: null,
    view: '',
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function basic(key) {
    return 'Basic ' + btoa(key + ':');
  }

  // api calls the gateway and returns the JSON answer; the key is the session's unless given
  // (signing in).
  async function api(method, path, body, signingInWith) {
    return (await request(method, path, body, signingInWith)).data;
  }

  // request is api with the answer's text as well.
  async function request(method, path, body, signingInWith) {
    const key = signingInWith || currentKey();
    if (!key) throw new ApiError(401, 'not signed in');
    const headers = {
      'Authorization': basic(key),
      'Accept': 'application/json',
      // Tells the gateway not to send a Basic challenge with a 401, which would make the
      // browser open its own sign-in prompt over this page.
      'X-Requested-With': 'XMLHttpRequest',
    };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'The gateway did not answer; check the connection and try again.');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + res.status;
      if (res.status === 401 && !signingInWith) {
        signOut('Your API key is no longer accepted: sign in again.');
      }
      throw new ApiError(res.status, msg);
    }
    return { data, text };
  }

  const taskPath = (id) => '/v1/task/' + encodeURIComponent(id);

  // ---------------------------------------------------------------- DOM helpers

  // el builds an element: attrs are set as attributes, children are nodes or text.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setText(id, text) {
    $(id).textContent = text === null || text === undefined ? '' : String(text);
  }

  let flashTimer = 0;
  function flash(msg, isError) {
    const f = $('flash');
    f.textContent = msg || '';
    f.classList.toggle('is-error', !!isError);
    clearTimeout(flashTimer);
    if (msg && !isError) flashTimer = setTimeout(() => { f.textContent = ''; }, 8000);
  }

  function fieldError(inputId, errorId, msg) {
    setText(errorId, msg || '');
    if (msg) $(inputId).setAttribute('aria-invalid', 'true');
    else $(inputId).removeAttribute('aria-invalid');
  }

  async function busy(button, label, fn) {
    const before = button.textContent;
    button.disabled = true;
    if (label) button.textContent = label;
    try {
      return await fn();
    } finally {
      button.disabled = false;
      button.textContent = before;
    }
  }

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function ago(iso) {
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (s < -5) return 'in ' + span(-s);
    if (s < 5) return 'just now';
    return span(s) + ' ago';
  }

  function span(s) {
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.round(s / 60) + ' min';
    if (s < 86400) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }

  function timeEl(iso) {
    if (!iso) return document.createTextNode('—');
    return el('time', { datetime: iso, title: fmtTime(iso) }, ago(iso));
  }

  function mask(secret) {
    if (!secret) return '';
    const cut = secret.indexOf('_') + 1;
    return secret.slice(0, cut) + '•'.repeat(16) + secret.slice(-4);
  }

  const STATE_LABELS = {
    succeeded: 'Succeeded', failed: 'Failed', retrying: 'Retrying', pending: 'Pending', no_callback: 'No callback',
  };

  function badge(s) {
    return el('span', { class: 'badge ' + s }, STATE_LABELS[s] || s);
  }

  // An email target (a@b.example or mailto:a@b.example) is answered by an SMTP relay, whose
  // reply code (250 accepted) is not an HTTP status.
  function isEmailTarget(target) {
    return typeof target === 'string' && !/^https?:/i.test(target) && target.includes('@');
  }

  function replyLabel(code, target) {
    return code ? (isEmailTarget(target) ? 'SMTP ' : 'HTTP ') + code : '';
  }

  // result shows an attempt's outcome: the reply code, kept on one line, then the error if it
  // says more than the code.
  function result(a, target) {
    if (!a) return document.createTextNode('—');
    const ok = !a.error;
    const what = replyLabel(a.status_code, target);
    const code = what ? el('span', { class: 'reply-code' }, what) : null;
    if (ok) return el('span', { class: 'res-ok' }, code || 'Accepted');
    if (!code || a.error === what) return el('span', { class: 'res-bad' }, code || a.error);
    if (a.error.includes(what)) return el('span', { class: 'res-bad' }, a.error);
    return el('span', { class: 'res-bad' }, code, ' — ' + a.error);
  }

  // ---------------------------------------------------------------- views and routing

  const TITLES = { signin: 'Sign in', profile: 'Profile', callbacks: 'Deliveries', callback: 'Callback', endpoints: 'Endpoints' };

  function show(view, title) {
    if (state.poll) {
      clearTimeout(state.poll);
      state.poll = null;
    }
    const changed = state.view !== view;
    state.view = view;
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + view;
    for (const a of document.querySelectorAll('#nav a')) {
      const current = a.dataset.view === view || (view === 'callback' && a.dataset.view === 'callbacks');
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    document.title = (title || TITLES[view]) + ' · Refonte callbacks';
    if (changed) {
      const h = document.querySelector('#view-' + view + ' h1');
      if (h) {
        h.setAttribute('tabindex', '-1');
        h.focus({ preventScroll: true });
      }
    }
  }

  // currentEnv is the environment the page shows: live unless the switch says test.
  function currentEnv() {
    return sessionStorage.getItem(ENV) === 'test' ? 'test' : 'live';
  }

  function currentKey() {
    return sessionStorage.getItem(KEYS[currentEnv()]);
  }

  function signedIn() {
    return !!(sessionStorage.getItem(KEYS.live) || sessionStorage.getItem(KEYS.test));
  }

  // renderEnv marks the whole page with the environment it shows.
  function renderEnv() {
    const env = currentEnv();
    document.body.classList.toggle('env-test', env === 'test');
    $('env-banner').hidden = env !== 'test' || !signedIn();
    $('env-switch').hidden = !signedIn();
    for (const b of document.querySelectorAll('#env-switch button')) {
      b.setAttribute('aria-pressed', String(b.dataset.env === env));
    }
    setText('auth-title', ENV_NAMES[env] + ' Callback Auth Key');
    for (const e of document.querySelectorAll('.auth-name')) e.textContent = ENV_NAMES[env] + ' Callback Auth Key';
    for (const e of document.querySelectorAll('.env-name')) e.textContent = ENV_NAMES[env];
  }

  function authKeyName() {
    return ENV_NAMES[currentEnv()] + ' Callback Auth Key';
  }

  // switchEnv shows the other environment: its own key, profile and tasks. Without a key for it
  // yet, the sign-in form asks for one.
  async function switchEnv(env) {
    if (env === currentEnv()) return;
    sessionStorage.setItem(ENV, env);
    state.profile = null;
    state.secret = null;
    state.showAuth = state.showSecret = false;
    state.cursors = [];
    state.pageCursor = '';
    for (const id of ['auth-value', 'secret-value', 'test-request', 'test-excerpt']) setText(id, '');
    $('test-result').hidden = true;
    $('callbacks-body').replaceChildren(); // the other environment's rows must not linger
    renderEnv();
    if (currentKey()) {
      try {
        setProfile(await api('GET', '/v1/profile'));
      } catch (err) {
        if (err.status === 401) return;
        flash(err.message, true);
      }
    }
    // A task id names a task of one environment only: back to the list.
    if (/^#\/callbacks\/./.test(location.hash)) go('#/callbacks');
    else route();
  }

  for (const b of document.querySelectorAll('#env-switch button')) {
    b.addEventListener('click', () => switchEnv(b.dataset.env));
  }

  function route() {
    const hash = location.hash || '';
    if (!hash.startsWith('#/') && hash !== '') return; // an in-page anchor
    flash('');
    renderEnv();
    if (!currentKey()) {
      // Signed in to the other environment only: ask for this one's key.
      const other = signedIn();
      $('nav').hidden = true;
      $('signout').hidden = !other;
      $('signin-env').hidden = !other;
      setText('signin-env', other ? 'Sign in to your ' + currentEnv() + ' environment with its API key (rk_' +
        currentEnv() + '_…).' : '');
      if (!other) setText('who', '');
      show('signin');
      performance.mark('refonte:sign-in-ready');
      return;
    }
    $('signin-env').hidden = true;
    $('nav').hidden = false;
    $('signout').hidden = false;
    const [path, qs] = hash.slice(1).split('?');
    const parts = path.split('/').filter(Boolean);
    if (parts[0] === 'profile') return void showProfile();
    if (parts[0] === 'endpoints') return void showEndpoints();
    if (parts[0] === 'callbacks' && parts.length === 2) return void showCallback(decodeURIComponent(parts[1]));
    if (parts[0] === 'callbacks' && parts.length === 1) return void showCallbacks(new URLSearchParams(qs || ''));
    location.replace('#/callbacks');
  }

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function signOut(message) {
    for (const k of [KEYS.live, KEYS.test, ENV]) sessionStorage.removeItem(k);
    state.profile = null;
    state.secret = null;
    state.showAuth = state.showSecret = false;
    for (const id of ['auth-value', 'secret-value', 'test-request', 'test-excerpt', 'who']) setText(id, '');
    $('test-result').hidden = true;
    route();
    if (message) setText('signin-error', message);
  }

  // ---------------------------------------------------------------- sign in

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('signin-key');
    const key = input.value.trim();
    fieldError('signin-key', 'signin-error', '');
    if (!key) return fieldError('signin-key', 'signin-error', 'Enter your API key.');
    if (!/^[\x21-\x7e]+$/.test(key)) {
      return fieldError('signin-key', 'signin-error', 'An API key has letters, digits and punctuation only, no spaces.');
    }
    const button = e.submitter || $('signin-form').querySelector('button');
    try {
      const p = await busy(button, 'Signing in…', () => api('GET', '/v1/profile', undefined, key));
      // The key's own environment, as the gateway names it: a test key opens the test one.
      const env = p.environment === 'test' ? 'test' : 'live';
      sessionStorage.setItem(KEYS[env], key);
      sessionStorage.setItem(ENV, env);
      input.value = '';
      setProfile(p);
      if (/^#\/(callbacks|profile|endpoints)/.test(location.hash)) route();
      else location.replace('#/callbacks'); // hashchange routes
    } catch (err) {
      fieldError('signin-key', 'signin-error',
        err.status === 401 ? 'This API key was not accepted.' : err.message);
      input.focus();
    }
  });

  $('signout').addEventListener('click', () => {
    signOut('');
    flash('Signed out.');
  });

  function setProfile(p) {
    state.profile = p;
    setText('who', p.customer_id);
    renderEnv();
  }

  // ---------------------------------------------------------------- profile

  async function showProfile() {
    show('profile');
    try {
      setProfile(await api('GET', '/v1/profile'));
      renderProfile(true);
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  }

  function renderProfile(resetInputs) {
    const p = state.profile;
    if (!p) return;
    if (resetInputs) {
      $('url-input').value = p.default_callback_url;
      if (!$('test-url').value && /^https?:/i.test(p.default_callback_url)) $('test-url').value = p.default_callback_url;
      fieldError('url-input', 'url-error', '');
    }
    if (resetInputs) {
      $('alerts-email').value = p.alert_email || '';
      $('alerts-autopause').checked = !!p.auto_pause;
      fieldError('alerts-email', 'alerts-error', '');
    }
    $('url-clear').disabled = !p.default_callback_url;
    setText('auth-value', state.showAuth ? p.callback_auth_key : mask(p.callback_auth_key));
    setText('auth-reveal', state.showAuth ? 'Hide' : 'Reveal');
    setText('secret-value', state.showSecret && state.secret ? state.secret : 'whsec_' + '•'.repeat(16));
    setText('secret-reveal', state.showSecret ? 'Hide' : 'Reveal');
    performance.mark('refonte:profile-rendered');
  }

  function looksLikeTarget(v) {
    return /^https?:\/\/[^\s/?#]+[^\s]*$/i.test(v) || /^(mailto:)?[^\s@<>(),;:"]+@[^\s@<>(),;:"]+$/i.test(v);
  }

  $('url-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = $('url-input').value.trim();
    if (v && !looksLikeTarget(v)) {
      return fieldError('url-input', 'url-error',
        'Enter an http:// or https:// URL, or an email address (name@example.com).');
    }
    await saveDefaultURL(v, $('url-save'));
  });

  $('url-clear').addEventListener('click', () => saveDefaultURL('', $('url-clear')));

  $('alerts-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = $('alerts-email').value.trim();
    fieldError('alerts-email', 'alerts-error', '');
    if (v && !/^[^\s@<>(),;:"]+@[^\s@<>(),;:"]+$/.test(v)) {
      return fieldError('alerts-email', 'alerts-error', 'Enter one email address (name@example.com), or leave it empty.');
    }
    try {
      const p = await busy($('alerts-save'), 'Saving…', () => api('PATCH', '/v1/profile',
        { alert_email: v, auto_pause: $('alerts-autopause').checked }));
      setProfile(p);
      renderProfile(true);
      flash(v ? 'Failure alerts go to ' + v + '.' : 'Failure alerts are off.');
    } catch (err) {
      if (err.status === 400) fieldError('alerts-email', 'alerts-error', err.message);
      else if (err.status !== 401) flash(err.message, true);
    }
  });

  // ---------------------------------------------------------------- endpoints

  const ENDPOINT_LABELS = { healthy: 'Healthy', failing: 'Failing', paused: 'Paused' };

  async function showEndpoints() {
    show('endpoints');
    try {
      renderEndpoints(await api('GET', '/v1/endpoints'));
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  }

  function renderEndpoints(data) {
    const rows = data.endpoints.map((e) => {
      const paused = e.state === 'paused';
      const button = el('button', { type: 'button', class: paused ? '' : 'secondary',
        'data-endpoint': e.endpoint, 'aria-label': (paused ? 'Resume ' : 'Pause ') + e.endpoint }, paused ? 'Resume' : 'Pause');
      button.addEventListener('click', () => changePause(e.endpoint, !paused, button));
      const state = el('span', { class: 'badge ' + (e.state === 'healthy' ? 'succeeded' : e.state === 'failing' ? 'failed' : 'retrying') },
        ENDPOINT_LABELS[e.state] || e.state);
      return el('tr', { 'data-endpoint': e.endpoint },
        el('td', {}, el('code', {}, e.endpoint)),
        el('td', { class: 'endpoint-state' }, state,
          paused && e.paused_by === 'automatic' ? ' (automatically)' : null),
        el('td', { class: 'num' }, String(e.consecutive_failures)),
        el('td', {}, timeEl(e.failing_since)),
        el('td', {}, timeEl(e.last_success_at)),
        el('td', { class: 'res-bad' }, e.last_error || '—'),
        el('td', {}, button));
    });
    $('endpoints-body').replaceChildren(...rows);
    $('endpoints-empty').hidden = rows.length > 0;
    performance.mark('refonte:endpoints-rendered');
  }

  async function changePause(endpoint, pause, button) {
    try {
      await busy(button, pause ? 'Pausing…' : 'Resuming…', () =>
        api('POST', pause ? '/v1/endpoints/pause' : '/v1/endpoints/resume', { endpoint }));
      flash(pause ? 'Paused ' + endpoint + ': its callbacks are held until you resume it.'
        : 'Resumed ' + endpoint + ': held callbacks flow again.');
      renderEndpoints(await api('GET', '/v1/endpoints'));
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  }

  async function saveDefaultURL(v, button) {
    fieldError('url-input', 'url-error', '');
    try {
      const p = await busy(button, 'Saving…', () => api('PATCH', '/v1/profile', { default_callback_url: v }));
      setProfile(p);
      renderProfile(true);
      flash(v ? 'Default callback URL saved: callbacks without their own URL go to ' + v + '.'
        : 'Default callback URL cleared: tasks without a callback_url get no callback.');
    } catch (err) {
      if (err.status === 400) fieldError('url-input', 'url-error', err.message);
      else if (err.status !== 401) flash(err.message, true);
    }
  }

  async function copy(text, what) {
    try {
      await navigator.clipboard.writeText(text);
      flash(what + ' copied to the clipboard.');
    } catch (e) {
      flash('Copying was refused by the browser: reveal the value and copy it by hand.', true);
    }
  }

  $('auth-reveal').addEventListener('click', () => {
    state.showAuth = !state.showAuth;
    renderProfile(false);
  });
  $('auth-copy').addEventListener('click', () => {
    if (state.profile) copy(state.profile.callback_auth_key, authKeyName());
  });
  confirmable('auth', async () => {
    const p = await api('POST', '/v1/profile/callback-auth-key/rotate');
    setProfile(p);
    state.showAuth = true;
    renderProfile(false);
    flash('New ' + authKeyName() + ' issued: callbacks carry it from now on.');
  });

  async function loadSecret() {
    const v = await api('GET', '/v1/profile/signing-secret');
    state.secret = v.signing_secret;
    showOverlap(v.previous_secret_expires_at);
    return v;
  }

  function showOverlap(until) {
    const note = $('secret-overlap');
    note.hidden = !until;
    if (until) {
      note.textContent = 'Rotation in progress: until ' + fmtTime(until) +
        ' callbacks carry a signature made with the previous secret as well.';
    }
  }

  $('secret-reveal').addEventListener('click', async () => {
    try {
      if (!state.showSecret) await busy($('secret-reveal'), 'Loading…', loadSecret);
      state.showSecret = !state.showSecret;
      renderProfile(false);
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  });
  $('secret-copy').addEventListener('click', async () => {
    try {
      if (!state.secret) await loadSecret();
      copy(state.secret, 'Signing secret');
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  });
  confirmable('secret', async () => {
    const v = await api('POST', '/v1/profile/signing-secret/rotate');
    state.secret = v.signing_secret;
    state.showSecret = true;
    showOverlap(v.previous_secret_expires_at);
    renderProfile(false);
    flash('New signing secret issued. Switch your verifier to it before ' + fmtTime(v.previous_secret_expires_at) + '.');
  });

  // confirmable wires a "Rotate…" button to its inline confirmation.
  function confirmable(prefix, action) {
    const panel = $(prefix + '-confirm');
    const open = $(prefix + '-rotate');
    open.addEventListener('click', () => {
      panel.hidden = false;
      $(prefix + '-rotate-no').focus();
    });
    $(prefix + '-rotate-no').addEventListener('click', () => {
      panel.hidden = true;
      open.focus();
    });
    $(prefix + '-rotate-yes').addEventListener('click', async () => {
      try {
        await busy($(prefix + '-rotate-yes'), 'Rotating…', action);
        panel.hidden = true;
        open.focus();
      } catch (err) {
        if (err.status !== 401) flash(err.message, true);
      }
    });
  }

  $('test-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const url = $('test-url').value.trim();
    fieldError('test-url', 'test-error', '');
    if (url && !/^https?:\/\/\S+$/i.test(url)) {
      return fieldError('test-url', 'test-error', 'Enter an http:// or https:// URL.');
    }
    try {
      const r = await busy($('test-send'), 'Sending…', () => api('POST', '/v1/profile/test-callback', { url }));
      renderTest(r);
    } catch (err) {
      if (err.status === 400 || err.status === 429) fieldError('test-url', 'test-error', err.message);
      else if (err.status !== 401) flash(err.message, true);
    }
  });

  function renderTest(r) {
    $('test-result').hidden = false;
    const outcome = $('test-outcome');
    outcome.replaceChildren(el('span', { class: r.succeeded ? 'res-ok' : 'res-bad' },
      r.succeeded ? 'Delivered' : 'Not delivered'));
    setText('test-status', r.status_code ? r.status_code : 'No HTTP answer');
    setText('test-duration', r.duration_ms + ' ms');
    setText('test-err', r.error || '—');
    setText('test-excerpt', r.response_excerpt || '(empty)');
    const lines = ['POST ' + r.url];
    for (const [k, v] of Object.entries(r.request_headers)) {
      lines.push(k + ': ' + (k === 'refonte-ai--callback-auth' && !state.showAuth ? mask(v) : v));
    }
    lines.push('', JSON.stringify(r.request_body, null, 2));
    setText('test-request', lines.join('\n'));
  }

  // ---------------------------------------------------------------- deliveries

  async function showCallbacks(params) {
    show('callbacks');
    const filterState = params.get('state') || '';
    const task = params.get('task_id') || '';
    const cursor = params.get('cursor') || '';
    $('filter-state').value = filterState;
    $('filter-task').value = task;
    if (!cursor) state.cursors = [];
    state.pageCursor = cursor;
    loadStats();
    const q = new URLSearchParams();
    if (filterState) q.set('state', filterState);
    if (task) q.set('task_id', task);
    if (cursor) q.set('cursor', cursor);
    q.set('limit', String(PAGE_SIZE));
    try {
      const data = await api('GET', '/v1/callbacks?' + q.toString());
      renderCallbacks(data, filterState, task);
    } catch (err) {
      if (err.status !== 401) flash(err.message, true);
    }
  }

  function renderCallbacks(data, filterState, task) {
    const rows = data.callbacks.map((c) => el('tr', {},
      el('td', {}, el('a', { href: '#/callbacks/' + encodeURIComponent(c.task_id) }, el('code', {}, c.task_id))),
      el('td', {}, badge(c.state)),
      el('td', { class: 'target' }, c.target || '—'),
      el('td', { class: 'num' }, String(c.attempts) + (c.delivery > 1 ? ' (delivery ' + c.delivery + ')' : '')),
      el('td', {}, timeEl(c.last_attempt_at)),
      el('td', {}, result(c.last_attempt, c.target)),
    ));
    $('callbacks-body').replaceChildren(...rows);
    const empty = $('callbacks-empty');
    empty.hidden = rows.length > 0;
    if (!rows.length) {
      empty.textContent = task ? 'No callback found for task id “' + task + '”' + (filterState ? ' in this state.' : '.')
        : data.next_cursor ? 'Nothing in this stretch of the history: press Older to look further back.'
          : filterState ? 'No ' + (STATE_LABELS[filterState] || filterState).toLowerCase() + ' callbacks.' : 'No callbacks yet.';
    }
    $('page-older').disabled = !data.next_cursor;
    $('page-older').dataset.cursor = data.next_cursor || '';
    $('page-newer').disabled = !state.pageCursor;
    performance.mark('refonte:callbacks-rendered');
  }

  function listHash(cursor) {
    const q = new URLSearchParams();
    if ($('filter-state').value) q.set('state', $('filter-state').value);
    const task = $('filter-task').value.trim();
    if (task) q.set('task_id', task);
    if (cursor) q.set('cursor', cursor);
    const s = q.toString();
    return '#/callbacks' + (s ? '?' + s : '');
  }

  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.cursors = [];
    go(listHash(''));
  });
  $('filter-state').addEventListener('change', () => {
    state.cursors = [];
    go(listHash(''));
  });
  $('filter-reset').addEventListener('click', () => {
    $('filter-state').value = '';
    $('filter-task').value = '';
    state.cursors = [];
    go('#/callbacks');
  });
  $('page-older').addEventListener('click', () => {
    state.cursors.push(state.pageCursor);
    go(listHash($('page-older').dataset.cursor));
  });
  $('page-newer').addEventListener('click', () => {
    go(listHash(state.cursors.pop() || ''));
  });

  // ---------------------------------------------------------------- chart

  async function loadStats() {
    try {
      drawStats(await api('GET', '/v1/callbacks/stats'));
    } catch (err) {
      if (err.status !== 401) setText('chart-summary', 'The chart could not be loaded: ' + err.message);
    }
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const CH = { w: 480, h: 160, l: 40, r: 8, t: 10, b: 22 };

  function frame(node, max, hours, unit) {
    node.replaceChildren();
    const pw = CH.w - CH.l - CH.r;
    const ph = CH.h - CH.t - CH.b;
    for (const f of [0, 0.5, 1]) {
      const y = CH.t + ph - f * ph;
      node.append(svg('line', { class: f ? 'grid' : 'axis', x1: CH.l, x2: CH.w - CH.r, y1: y, y2: y }));
      node.append(svg('text', { class: 'tick', x: CH.l - 6, y: y + 4, 'text-anchor': 'end' }, fmtNum(max * f) + unit));
    }
    const bw = pw / hours.length;
    hours.forEach((h, i) => {
      if (i % 6 !== 0) return;
      const d = new Date(h.start);
      const label = String(d.getHours()).padStart(2, '0') + ':00';
      node.append(svg('text', { class: 'tick', x: CH.l + i * bw + 1, y: CH.h - 6 }, label));
    });
    return { pw, ph, bw };
  }

  function fmtNum(v) {
    if (v >= 10000) return Math.round(v / 1000) + 'k';
    if (v >= 1000) return (v / 1000).toFixed(1).replace(/\.0$/, '') + 'k';
    return String(Math.round(v * 10) / 10);
  }

  function hourLabel(h) {
    const d = new Date(h.start);
    const e = new Date(d.getTime() + 3600 * 1000);
    const f = (x) => String(x.getHours()).padStart(2, '0') + ':00';
    return f(d) + '–' + f(e);
  }

  function drawStats(s) {
    const counts = $('chart-count');
    const max = niceMax(Math.max(0, ...s.hours.map((h) => h.succeeded + h.failed)));
    const g = frame(counts, max, s.hours, '');
    s.hours.forEach((h, i) => {
      const x = CH.l + i * g.bw + 1;
      const w = Math.max(1, g.bw - 2);
      const hOk = (h.succeeded / max) * g.ph;
      const hBad = (h.failed / max) * g.ph;
      const group = svg('g', {});
      group.append(svg('title', {}, hourLabel(h) + ': ' + h.succeeded + ' succeeded, ' + h.failed + ' failed'));
      if (h.succeeded) group.append(svg('rect', { class: 'bar-ok', x, y: CH.t + g.ph - hOk, width: w, height: hOk }));
      if (h.failed) group.append(svg('rect', { class: 'bar-bad', x, y: CH.t + g.ph - hOk - hBad, width: w, height: hBad }));
      counts.append(group);
    });

    const lat = $('chart-latency');
    const lmax = niceMax(Math.max(0, ...s.hours.map((h) => h.latency_ms_p95 || 0)));
    const lg = frame(lat, lmax, s.hours, '');
    for (const [field, cls] of [['latency_ms_p50', 'p50'], ['latency_ms_p95', 'p95']]) {
      let d = '';
      let pen = 'M';
      s.hours.forEach((h, i) => {
        const v = h[field];
        if (v === null || v === undefined) {
          pen = 'M';
          return;
        }
        const x = CH.l + (i + 0.5) * lg.bw;
        const y = CH.t + lg.ph - (v / lmax) * lg.ph;
        d += pen + x.toFixed(1) + ' ' + y.toFixed(1) + ' ';
        pen = 'L';
        const dot = svg('circle', { class: 'dot-' + cls, cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5 });
        dot.append(svg('title', {}, hourLabel(h) + ': ' + (cls === 'p50' ? 'median ' : '95th percentile ') + v + ' ms'));
        lat.append(dot);
      });
      if (d) lat.insertBefore(svg('path', { class: 'line-' + cls, d: d.trim() }), lat.firstChild);
    }

    const t = s.totals;
    const total = t.succeeded + t.failed;
    setText('chart-summary', total
      ? total + ' attempts in the last 24 hours: ' + t.succeeded + ' succeeded, ' + t.failed + ' failed.' +
        (s.complete ? '' : ' (Counted from the ' + s.tasks + ' most recently active tasks.)')
      : 'No callback attempts in the last 24 hours.');
    setText('chart-latency-summary', t.latency_ms_p50 === null ? ''
      : 'Latency: median ' + t.latency_ms_p50 + ' ms, 95th percentile ' + t.latency_ms_p95 + ' ms, slowest ' +
        t.latency_ms_max + ' ms.');
  }

  // ---------------------------------------------------------------- one callback

  let current = { id: '', attempts: 0 };

  async function showCallback(id) {
    show('callback', 'Callback ' + id);
    setText('cb-task', id);
    setText('cb-resend-status', '');
    current = { id, attempts: 0 };
    await refreshCallback(id);
  }

  async function refreshCallback(id) {
    try {
      const [cb, body] = await Promise.all([
        api('GET', taskPath(id) + '/callback'),
        request('GET', taskPath(id) + '/callback/body').catch(() => null),
      ]);
      if (current.id !== id) return null;
      renderCallback(cb, body);
      return cb;
    } catch (err) {
      if (current.id !== id) return null;
      if (err.status === 404) {
        renderCallback(null, null);
        setText('cb-resend-status', 'No callback found for task “' + id + '”: the id may be wrong, or its record expired.');
      } else if (err.status !== 401) {
        flash(err.message, true);
      }
      return null;
    }
  }

  function renderCallback(cb, body) {
    $('cb-resend').disabled = !cb;
    const stateCell = $('cb-state');
    stateCell.replaceChildren(...(cb ? [badge(cb.state)] : []));
    if (cb && cb.callback_succeeded !== null) {
      stateCell.append(' callback_succeeded: ' + cb.callback_succeeded);
    }
    setText('cb-target', cb ? (cb.target || 'none yet') : '');
    setText('cb-next', cb ? (cb.next_attempt_at ? fmtTime(cb.next_attempt_at) + ' (' + ago(cb.next_attempt_at) + ')' : '—') : '');
    setText('cb-delivery', cb ? (cb.delivery > 1 ? cb.delivery + ' (resend ' + (cb.delivery - 1) + ')' : cb.delivery || '—') : '');
    setText('cb-webhook', cb ? cb.webhook_id : '');
    const attempts = cb ? cb.attempts : [];
    current.attempts = attempts.length;
    $('attempts-body').replaceChildren(...attempts.map((a) => el('tr', { 'data-delivery': a.delivery, 'data-attempt': a.attempt },
      el('td', { class: 'num' }, a.delivery),
      el('td', { class: 'num' }, a.attempt),
      el('td', {}, fmtTime(a.at)),
      el('td', {}, result(a, cb.target)),
      el('td', { class: 'num' }, a.duration_ms + ' ms'),
      el('td', { class: 'excerpt' }, a.response_excerpt ? el('code', {}, a.response_excerpt) : '—'),
    )));
    $('attempts-empty').hidden = attempts.length > 0;
    setText('cb-body', body ? JSON.stringify(body.data, null, 2) : '');
    setText('cb-body-raw', body ? body.text.replace(/\n$/, '') : '');
    performance.mark('refonte:callback-rendered');
  }

  $('cb-refresh').addEventListener('click', () => busy($('cb-refresh'), 'Refreshing…', () => refreshCallback(current.id)));

  $('cb-resend').addEventListener('click', async () => {
    const id = current.id;
    const before = current.attempts;
    try {
      const r = await busy($('cb-resend'), 'Resending…', () => api('POST', taskPath(id) + '/send-callback'));
      setText('cb-resend-status', 'Resend queued to ' + r.callback_url + '. Waiting for its first attempt…');
      const deadline = Date.now() + 60000;
      const tick = async () => {
        state.poll = null;
        const cb = await refreshCallback(id);
        if (current.id !== id) return;
        if (cb && cb.attempts.length > before) {
          const a = cb.attempts[cb.attempts.length - 1];
          setText('cb-resend-status', 'New attempt (delivery ' + a.delivery + '): ' +
            (a.error ? 'failed — ' + a.error : 'succeeded' + (a.status_code ? ' with ' + replyLabel(a.status_code, cb.target) : '')) + '.');
          return;
        }
        if (Date.now() > deadline) {
          setText('cb-resend-status', 'The resend is queued; no attempt yet. Press Refresh to look again.');
          return;
        }
        state.poll = setTimeout(tick, 500);
      };
      state.poll = setTimeout(tick, 300);
    } catch (err) {
      if (err.status !== 401) setText('cb-resend-status', 'Resend refused: ' + err.message);
    }
  });

  // ---------------------------------------------------------------- start

  window.addEventListener('hashchange', route);

  async function start() {
    if (currentKey()) {
      try {
        setProfile(await api('GET', '/v1/profile'));
      } catch (err) {
        if (err.status === 401) return; // signOut already showed the sign-in form
        flash(err.message, true);
      }
    }
    route();
  }
  start();
})();
