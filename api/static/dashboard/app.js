// Consumption Sync operations dashboard. Plain JS, no build step. Speaks GraphQL at /graphql with
// the bearer token kept in sessionStorage. Every piece of data is put into the page as text
// (textContent / text nodes / attributes) — never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'csync.dashboard.token';
  /** UTC or the browser's zone, remembered across visits (not sensitive). */
  const TZ_KEY = 'csync.dashboard.timeZone';
  const PAGE_SIZE = 25;
  const REFRESH_MS = 5000;
  /** Relative times ("2 minutes ago") and the "updated" indicator are redrawn this often. */
  const TICK_MS = 1000;
  /** How long an armed bulk retry waits for its confirming click (longer than a refresh). */
  const ARM_MS = 15000;
  const STATUSES = ['ALL', 'PENDING', 'RUNNING', 'FAILED_RETRYING', 'DEAD', 'SUCCEEDED', 'SKIPPED', 'CANCELLED'];
  const RETRYABLE = new Set(['DEAD', 'FAILED_RETRYING']);
  const COUNT_KEY = {
    ALL: 'total', PENDING: 'pending', RUNNING: 'running', FAILED_RETRYING: 'failedRetrying', DEAD: 'dead',
    SUCCEEDED: 'succeeded', SKIPPED: 'skipped', CANCELLED: 'cancelled',
  };
  const MODULES = {
    ENTERPRISE_WORKLOADS: 'Enterprise Workloads', MICROSOFT_365: 'Microsoft 365', ENDPOINTS: 'Endpoints',
    GOOGLE_WORKSPACE: 'Google Workspace',
  };

  // ------------------------------------------------------------------ state

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    canOperate: false,
    filters: { status: 'ALL', period: '', customerId: '', runId: '' },
    cursors: [null], // cursor of each page seen so far; the last one is the current page
    runs: [],
    detailId: null,
    detailOpener: null, // the element focus returns to when the detail closes
    timer: null,
    ticker: null,
    rendered: {}, // last rendered data per region (skip re-rendering what did not change)
    clockOffsetMs: 0, // the server's clock minus this browser's (relative times use the server's)
    lastOkAt: null, // browser time of the last answer from the API
    failure: null, // { message, since } while the API does not answer
    armed: null, // { key, until }: a bulk retry waiting for its confirming click
    timeZone: localStorage.getItem(TZ_KEY) === 'local' ? 'local' : 'utc',
    customerLabel: '', // the filtered customer's name, for the filter input
  };

  // ------------------------------------------------------------------ small helpers

  const $ = (id) => document.getElementById(id);

  /** Create an element. Strings and numbers become text nodes; functions in `on*` become listeners. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k.startsWith('on')) continue; // never an inline handler
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function humanize(s) {
    if (!s) return '';
    const t = String(s).toLowerCase().replace(/_/g, ' ');
    return t.charAt(0).toUpperCase() + t.slice(1);
  }

  const moduleName = (m) => MODULES[m] || humanize(m);

  /** End a message with a full stop (reasons come from elsewhere, with or without one). */
  const sentence = (t) => (/[.!?]$/.test(String(t).trim()) ? String(t).trim() : `${String(t).trim()}.`);

  /** Now on the server's clock (which tests and demos may pin), estimated from `serverTime`. */
  const serverNow = () => Date.now() + state.clockOffsetMs;

  /** The browser's zone as a short label, e.g. "GMT+5:30" or "CET". */
  function localZoneName() {
    const part = new Intl.DateTimeFormat('en-GB', { timeZoneName: 'short' }).formatToParts(new Date()).find((p) => p.type === 'timeZoneName');
    return part ? part.value : 'local time';
  }

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const opts = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
    if (state.timeZone === 'utc') return `${d.toLocaleString('en-GB', { ...opts, timeZone: 'UTC' })} UTC`;
    return d.toLocaleString('en-GB', { ...opts, timeZoneName: 'short' });
  }

  /** A clock time of today (for "updated at"), in the chosen zone. */
  function fmtClock(ms) {
    const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
    if (state.timeZone === 'utc') return `${new Date(ms).toLocaleTimeString('en-GB', { ...opts, timeZone: 'UTC' })} UTC`;
    return new Date(ms).toLocaleTimeString('en-GB', { ...opts, timeZoneName: 'short' });
  }

  /** "3 minutes ago" / "in 2 days", against the server's clock. */
  function relTime(iso) {
    if (!iso) return '';
    const d = new Date(iso).getTime();
    if (Number.isNaN(d)) return '';
    const s = Math.round((d - serverNow()) / 1000);
    const abs = Math.abs(s);
    const units = [[86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
    if (abs < 5) return 'just now';
    for (const [size, name] of units) {
      if (abs >= size) {
        const n = Math.floor(abs / size);
        const label = `${n} ${name}${n === 1 ? '' : 's'}`;
        return s < 0 ? `${label} ago` : `in ${label}`;
      }
    }
    return '';
  }

  function fmtDuration(fromIso, toIso) {
    if (!fromIso) return '—';
    const ms = (toIso ? new Date(toIso).getTime() : serverNow()) - new Date(fromIso).getTime();
    if (!(ms >= 0)) return '—';
    if (ms < 1000) return `${ms} ms`;
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  /** A time cell: relative time (kept current by the ticker), the absolute time as a tooltip. */
  const timeEl = (iso, cls) => h('time', { class: cls || 'time', datetime: iso || null, 'data-rel': iso ? '' : null, title: iso ? fmtTime(iso) : null }, iso ? relTime(iso) : '—');

  /** A running duration ("running 2 min 4 s"), kept current by the ticker. */
  const runningEl = (fromIso) => h('span', { class: 'muted', 'data-since': fromIso }, `running ${fmtDuration(fromIso)}`);

  /** Redraw what depends on the passing of time only (no request, no re-render of the data). */
  function tick() {
    for (const el of document.querySelectorAll('time[data-rel]')) {
      const text = relTime(el.getAttribute('datetime'));
      if (el.textContent !== text) el.textContent = text;
    }
    for (const el of document.querySelectorAll('[data-since]')) {
      const text = `running ${fmtDuration(el.dataset.since)}`;
      if (el.textContent !== text) el.textContent = text;
    }
    renderUpdated();
    if (state.armed && Date.now() > state.armed.until) disarm();
  }

  const pill = (status, testid) => h('span', { class: `pill pill-${String(status).toLowerCase()}`, 'data-testid': testid || null, 'data-status': status }, humanize(status));

  function toast(kind, title, lines) {
    const el = h('div', { class: `toast toast-${kind}`, 'data-testid': 'toast', 'data-kind': kind, role: kind === 'error' ? 'alert' : 'status' },
      h('div', { class: 'toast-title' }, title),
      (lines || []).map((l) => h('div', { class: 'toast-line', 'data-testid': l.testid || null }, l.code ? h('code', {}, l.code) : null, l.code ? ' ' : null, l.text)));
    $('toasts').append(el);
    setTimeout(() => el.classList.add('toast-out'), kind === 'error' ? 9000 : 4500);
    setTimeout(() => el.remove(), kind === 'error' ? 9600 : 5100);
  }

  // ------------------------------------------------------------------ GraphQL

  class AuthError extends Error {}
  /** The API did not answer (network) or answered with a server error: the page's data is old. */
  class UnreachableError extends Error {}

  async function gql(query, variables) {
    let res;
    try {
      res = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${state.token}` },
        body: JSON.stringify({ query, variables: variables || {} }),
      });
    } catch (e) {
      throw new UnreachableError('The last request got no answer.');
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) {
      throw new AuthError(body && body.errors && body.errors[0] ? body.errors[0].message : 'token rejected');
    }
    if (res.status >= 500 || !body) throw new UnreachableError(`The last request was answered with HTTP ${res.status}.`);
    if (!res.ok) throw new Error(`The API answered HTTP ${res.status}.`);
    noteReachable();
    if (body.errors && body.errors.length) {
      const e = body.errors[0];
      const code = e.extensions && e.extensions.code;
      const err = new Error(e.message);
      err.code = code;
      err.data = body.data;
      throw err;
    }
    return body.data;
  }

  const Q_ME = 'query DashboardMe { me { sub tenantId roles } }';

  const Q_OVERVIEW = `query DashboardOverview {
    systemStatus {
      serverTime
      workers { name startedAt lastSeenAt alive }
      workersAlive connectWiseConfigured consumptionSyncEnabled
      connectionBroken connectionBrokenReason connectionBrokenSince pausedUntil
      nextScheduledRunAt staleMappings queueDepth { queue waiting }
    }
    allCounts: pushCounts { total dead failedRetrying }
    syncRuns(first: 10) {
      edges { node { id period trigger dryRun status requestedBy startedAt finishedAt error
        counts { total pending running succeeded failedRetrying dead skipped cancelled } } }
    }
  }`;

  const Q_PUSHES = `query DashboardPushes($first: Int, $after: String, $status: PushStatus, $period: Period, $customerId: ID, $syncRunId: ID) {
    pushCounts(period: $period, customerId: $customerId, syncRunId: $syncRunId) {
      total pending running succeeded failedRetrying dead skipped cancelled
    }
    pushes(first: $first, after: $after, status: $status, period: $period, customerId: $customerId, syncRunId: $syncRunId) {
      edges { node {
        id status period productModule usage quantity dryRun attempts maxAttempts retryable
        lastErrorCode lastError lastHttpStatus nextAttemptAt updatedAt driftFromQuantity
        customer { id externalId accountName } syncRun { id }
      } }
      pageInfo { hasNextPage endCursor }
    }
  }`;

  const Q_PUSH = `query DashboardPush($id: ID!) {
    push(id: $id) {
      id status period productModule usage method value quantity sampleDays fallback skipReason dryRun
      attempts maxAttempts nextAttemptAt lastErrorCode lastError lastHttpStatus ticketId
      retryable writeBlockedBy heldQuantity driftFromQuantity cancelReason
      cwCompanyId cwAgreementId cwAdditionId createdAt updatedAt finishedAt
      customer { id externalId accountName }
      syncRun { id period trigger }
      attemptHistory { attempt step at durationMs httpStatus requestId quantity outcome errorCode errorMessage }
    }
    auditLog(first: 20, entityType: "push", entityId: $id) { edges { node { id at actor action } } }
  }`;

  const M_RETRY = `mutation DashboardRetryPush($id: ID!) {
    retryPush(id: $id) { push { id status } userErrors { code field message } }
  }`;

  const M_RETRY_RUN = `mutation DashboardRetryRun($id: ID!) {
    retryFailedPushes(syncRunId: $id) { pushes { id } skippedSuperseded skippedOrphaned skippedInFlight userErrors { code field message } }
  }`;

  // ------------------------------------------------------------------ sign in / out

  function showLogin(message) {
    $('app').hidden = true;
    $('who').hidden = true;
    closeDetail();
    $('login').hidden = false;
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token-input').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    state.rendered = {};
    state.failure = null;
    state.lastOkAt = null;
    stopTimer();
    showLogin(message);
  }

  async function signIn(token) {
    state.token = token;
    try {
      const data = await gql(Q_ME);
      sessionStorage.setItem(TOKEN_KEY, token);
      state.me = data.me;
    } catch (e) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(e instanceof AuthError ? `The token was rejected: ${e.message}` : e.message);
      return;
    }
    const roles = state.me.roles || [];
    state.canOperate = roles.includes('operator') || roles.includes('admin');
    $('who-tenant').textContent = state.me.tenantId;
    $('who-sub').textContent = state.me.sub;
    $('who-role').textContent = roles.length ? roles.join(', ') : 'no role';
    $('who-role').className = `role role-${state.canOperate ? 'operate' : 'read'}`;
    $('readonly-badge').hidden = state.canOperate;
    document.body.classList.toggle('read-only', !state.canOperate);
    $('login').hidden = true;
    $('who').hidden = false;
    $('app').hidden = false;
    renderTimeZone();
    readHash();
    renderTabs(null);
    await refreshAll();
    startTimer();
  }

  // ------------------------------------------------------------------ time zone

  function renderTimeZone() {
    const utc = state.timeZone === 'utc';
    const btn = $('tz-toggle');
    btn.textContent = utc ? 'UTC' : localZoneName();
    btn.setAttribute('aria-pressed', utc ? 'false' : 'true');
    btn.title = utc ? 'Times are in UTC: click for this browser\'s time zone' : 'Times are in this browser\'s time zone: click for UTC';
    $('footnote-tz').textContent = utc ? 'Times are in UTC.' : `Times are in this browser's time zone (${localZoneName()}).`;
  }

  function toggleTimeZone() {
    state.timeZone = state.timeZone === 'utc' ? 'local' : 'utc';
    localStorage.setItem(TZ_KEY, state.timeZone);
    renderTimeZone();
    state.rendered = {};
    refreshAll();
  }

  // ------------------------------------------------------------------ is the API answering?

  function noteReachable() {
    state.lastOkAt = Date.now();
    if (state.failure) {
      state.failure = null;
      renderConnection();
    }
  }

  function noteUnreachable(message) {
    if (!state.failure) state.failure = { message, since: Date.now() };
    else state.failure.message = message;
    renderConnection();
  }

  /** The "not answering" banner, and the stale look of the cards, while requests fail. */
  function renderConnection() {
    const box = clear($('conn-banner'));
    document.body.classList.toggle('is-stale', !!state.failure);
    if (state.failure) {
      // On the server's clock, like every other time on the page.
      const when = state.lastOkAt ? `The figures below are from ${fmtClock(state.lastOkAt + state.clockOffsetMs)} and may be out of date` : 'Nothing could be read yet';
      box.append(banner('danger', 'banner-unreachable', 'The API is not answering.',
        `${sentence(state.failure.message)} ${when}; retrying every ${REFRESH_MS / 1000} seconds.`));
    }
    renderUpdated();
  }

  /** "Updated 4 s ago" in the header; "Last updated …" (in red) while the API does not answer. */
  function renderUpdated() {
    const el = $('updated');
    if (!state.lastOkAt) {
      el.textContent = state.failure ? 'Not updated' : '';
      el.classList.toggle('is-failing', !!state.failure);
      return;
    }
    const secs = Math.max(0, Math.round((Date.now() - state.lastOkAt) / 1000));
    const ago = secs < 60 ? `${secs} s ago` : secs < 3600 ? `${Math.floor(secs / 60)} min ago` : `at ${fmtClock(state.lastOkAt + state.clockOffsetMs)}`;
    const text = `${state.failure ? 'Last updated' : 'Updated'} ${ago}`;
    if (el.textContent !== text) el.textContent = text;
    el.dataset.updatedAt = `${state.lastOkAt}`;
    el.classList.toggle('is-failing', !!state.failure);
  }

  // ------------------------------------------------------------------ filters <-> URL hash

  /** What an id of the API may look like (opaque global ids: URL-safe base64); never parsed here. */
  const GLOBAL_ID = /^[A-Za-z0-9_-]{1,200}$/;

  function readHash() {
    const previousCustomer = state.filters.customerId;
    const p = new URLSearchParams(location.hash.slice(1));
    const status = p.get('status');
    state.filters = {
      status: STATUSES.includes(status) ? status : 'ALL',
      period: /^\d{4}-\d{2}$/.test(p.get('period') || '') ? p.get('period') : '',
      customerId: GLOBAL_ID.test(p.get('customer') || '') ? p.get('customer') : '',
      runId: GLOBAL_ID.test(p.get('run') || '') ? p.get('run') : '',
    };
    $('filter-period').value = state.filters.period;
    state.cursors = [null];
    if (state.filters.customerId !== previousCustomer) state.customerLabel = '';
    showCustomerFilter();
  }

  /** The filter input shows the filtered customer's name (looked up when the URL only has its id). */
  async function showCustomerFilter() {
    const id = state.filters.customerId;
    clear($('customer-choices'));
    if (!id) {
      state.customerLabel = '';
      $('filter-customer').value = '';
      return;
    }
    $('filter-customer').value = state.customerLabel || `#${id}`;
    if (state.customerLabel) return;
    try {
      const data = await gql('query DashboardCustomer($id: ID!) { customer(id: $id) { id accountName externalId } }', { id });
      if (state.filters.customerId === id && data.customer) {
        state.customerLabel = data.customer.accountName;
        $('filter-customer').value = state.customerLabel;
      }
    } catch (e) {
      // The filter still works by id; the name is only for display.
    }
  }

  const Q_FIND_CUSTOMERS = `query DashboardFindCustomers($search: String) {
    customers(first: 8, search: $search) { edges { node { id accountName externalId } } }
  }`;

  /** Resolve what was typed (a name, an external id, or an ID) to one customer, or offer choices. */
  async function applyCustomerFilter(text, rest) {
    const box = clear($('customer-choices'));
    if (!text) {
      state.customerLabel = '';
      setFilters({ ...rest, customerId: '' });
      return;
    }
    let found = [];
    try {
      found = (await gql(Q_FIND_CUSTOMERS, { search: text })).customers.edges.map((e) => e.node);
      if (GLOBAL_ID.test(text)) {
        const byId = (await gql('query DashboardCustomer($id: ID!) { customer(id: $id) { id accountName externalId } }', { id: text })).customer;
        if (byId && !found.some((c) => c.id === byId.id)) found.unshift(byId);
      }
    } catch (e) {
      toast('error', 'Customers could not be searched', [{ text: e.message }]);
      return;
    }
    const lower = text.toLowerCase();
    const exact = found.filter((c) => c.id === text || c.externalId.toLowerCase() === lower || c.accountName.toLowerCase() === lower);
    const pick = found.length === 1 ? found[0] : exact.length === 1 ? exact[0] : null;
    if (pick) {
      state.customerLabel = pick.accountName;
      $('filter-customer').value = pick.accountName;
      setFilters({ ...rest, customerId: pick.id });
      return;
    }
    if (!found.length) {
      box.append(h('span', { 'data-testid': 'customer-no-match' }, `No customer's name, external id or ID matches “${text}”.`));
      return;
    }
    box.append(h('span', {}, `${found.length}${found.length === 8 ? '+' : ''} customers match — pick one:`),
      ...found.map((c) => h('button', {
        type: 'button', class: 'btn btn-small', 'data-testid': 'customer-choice', 'data-customer-id': c.id,
        onclick: () => { clear(box); state.customerLabel = c.accountName; $('filter-customer').value = c.accountName; setFilters({ ...rest, customerId: c.id }); },
      }, `${c.accountName} (${c.externalId})`)));
  }

  function writeHash() {
    const p = new URLSearchParams();
    const f = state.filters;
    if (f.status !== 'ALL') p.set('status', f.status);
    if (f.period) p.set('period', f.period);
    if (f.customerId) p.set('customer', f.customerId);
    if (f.runId) p.set('run', f.runId);
    const next = p.toString();
    if (location.hash.slice(1) !== next) history.replaceState(null, '', next ? `#${next}` : location.pathname);
  }

  function setFilters(patch) {
    Object.assign(state.filters, patch);
    state.cursors = [null];
    writeHash();
    loadPushes();
  }

  // ------------------------------------------------------------------ loading

  async function guarded(fn) {
    try {
      await fn();
    } catch (e) {
      if (e instanceof UnreachableError) {
        noteUnreachable(e.message);
      } else if (e instanceof AuthError) {
        signOut(`Your session ended: ${e.message}. Paste a fresh token.`);
      } else if (e.code === 'FORBIDDEN') {
        showPanelError(`Your roles (${(state.me && state.me.roles || []).join(', ') || 'none'}) may not read sync history.`);
      } else {
        showPanelError(e.message);
      }
    }
  }

  function showPanelError(message) {
    const key = `error:${message}`;
    if (state.rendered.banners === key) return;
    state.rendered.banners = key;
    clear($('banners')).append(banner('error', 'banner-error', 'Something went wrong', message));
  }

  async function refreshAll() {
    await Promise.all([loadOverview(), loadPushes(), state.detailId ? loadDetail(state.detailId) : null]);
  }

  async function loadOverview() {
    await guarded(async () => {
      const sentAt = Date.now();
      const data = await gql(Q_OVERVIEW);
      // The server's clock against ours, from the middle of the round trip.
      const serverTime = new Date(data.systemStatus.serverTime).getTime();
      if (!Number.isNaN(serverTime)) state.clockOffsetMs = serverTime - (sentAt + Date.now()) / 2;
      delete data.systemStatus.serverTime; // changes on every read: not part of what is rendered
      renderBanners(data.systemStatus);
      renderStats(data.systemStatus, data.allCounts);
      state.runs = data.syncRuns.edges.map((e) => e.node);
      renderRuns(state.runs);
      renderRunFilter(state.runs);
    });
  }

  let pushesSeq = 0;
  async function loadPushes() {
    const seq = ++pushesSeq;
    await guarded(async () => {
      const f = state.filters;
      const data = await gql(Q_PUSHES, {
        first: PAGE_SIZE,
        after: state.cursors[state.cursors.length - 1],
        status: f.status === 'ALL' ? null : f.status,
        period: f.period || null,
        customerId: f.customerId || null,
        syncRunId: f.runId || null,
      });
      if (seq !== pushesSeq) return; // a newer request superseded this one
      renderTabs(data.pushCounts);
      renderPushes(data.pushes);
      renderBulkRetry(data.pushCounts);
    });
  }

  async function loadDetail(id) {
    await guarded(async () => {
      const data = await gql(Q_PUSH, { id });
      if (state.detailId !== id) return;
      renderDetail(data.push, data.auditLog.edges.map((e) => e.node));
    });
  }

  function startTimer() {
    stopTimer();
    state.timer = setInterval(() => {
      if (document.hidden || !$('auto-refresh').checked || !state.token) return;
      refreshAll();
    }, REFRESH_MS);
    state.ticker = setInterval(tick, TICK_MS);
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    if (state.ticker) clearInterval(state.ticker);
    state.timer = null;
    state.ticker = null;
  }

  /** Skip DOM work when the data of a region did not change (keeps focus and hover stable). */
  function changed(region, data) {
    const key = JSON.stringify(data);
    if (state.rendered[region] === key) return false;
    state.rendered[region] = key;
    return true;
  }

  // ------------------------------------------------------------------ header: banners and stats

  function banner(kind, testid, title, text, extra) {
    return h('div', { class: `banner banner-${kind}`, 'data-testid': testid, role: kind === 'error' || kind === 'danger' ? 'alert' : 'status' },
      h('span', { class: 'banner-icon', 'aria-hidden': 'true' }, kind === 'info' ? 'i' : '!'),
      h('div', { class: 'banner-text' }, h('strong', {}, title), text ? h('span', {}, ' ', text) : null, extra || null));
  }

  function renderBanners(s) {
    if (!changed('banners', [s, state.timeZone])) return;
    const out = [];
    if (s.connectionBroken) {
      out.push(banner('danger', 'banner-connection-broken', 'ConnectWise connection broken.',
        `${sentence(s.connectionBrokenReason || 'ConnectWise rejected the credentials')} Pushes stop until an admin fixes the ConnectWise settings; then retry the dead pushes.`,
        s.connectionBrokenSince ? h('span', { class: 'muted' }, ' Since ', timeEl(s.connectionBrokenSince), '.') : null));
    }
    if (s.workersAlive === 0) {
      out.push(banner('warning', 'banner-no-workers', 'No workers alive.', null,
        s.workers.length
          ? h('span', {}, ' The last worker was seen ', timeEl(s.workers[0].lastSeenAt), '. Nothing is pushed, retried or scheduled until a worker runs.')
          : h('span', {}, ' No worker has reported a heartbeat. Nothing is pushed, retried or scheduled until a worker runs.')));
    }
    if (s.pausedUntil) {
      out.push(banner('warning', 'banner-paused', 'Rate limited by ConnectWise.', null,
        h('span', {}, ` All calls are paused until ${fmtTime(s.pausedUntil)} (`, timeEl(s.pausedUntil), ').')));
    }
    if (!s.connectWiseConfigured) {
      out.push(banner('info', 'banner-not-configured', 'ConnectWise is not configured.', 'An admin connects it with configureConnectWise.'));
    } else if (!s.consumptionSyncEnabled) {
      out.push(banner('info', 'banner-sync-off', 'Consumption sync is switched off.', 'Scheduled runs are not created for this tenant.'));
    }
    if (s.staleMappings > 0) {
      out.push(banner('info', 'banner-stale', `${s.staleMappings} stale mapping${s.staleMappings === 1 ? '' : 's'}.`,
        'Late consumption corrections changed values that were already pushed; the next run sends them again.'));
    }
    clear($('banners')).append(...out);
  }

  function renderStats(s, counts) {
    if (!changed('stats', [s, counts, state.timeZone])) return;
    const total = s.workers.length;
    $('stat-workers-value').textContent = `${s.workersAlive}`;
    $('stat-workers-value').className = `stat-value ${s.workersAlive === 0 ? 'tone-warn' : 'tone-ok'}`;
    $('stat-workers-sub').textContent = total ? `of ${total} seen · ${s.workers.filter((w) => w.alive).map((w) => w.name).slice(0, 2).join(', ')}` : 'none has reported';
    $('stat-workers').title = s.workers.map((w) => `${w.name}: ${w.alive ? 'alive' : 'gone'}, last seen ${fmtTime(w.lastSeenAt)}`).join('\n');

    const next = s.nextScheduledRunAt;
    clear($('stat-next-run-value')).append(next ? timeEl(next, 'time') : '—');
    $('stat-next-run-sub').textContent = next ? fmtTime(next) : 'SYNC_CRON has no next tick';
    $('stat-next-run').classList.toggle('dim', !s.consumptionSyncEnabled);

    if (s.queueDepth) {
      const waiting = s.queueDepth.reduce((a, q) => a + q.waiting, 0);
      $('stat-queue-value').textContent = `${waiting}`;
      const busy = s.queueDepth.filter((q) => q.waiting > 0);
      $('stat-queue-sub').textContent = busy.length
        ? busy.map((q) => `${q.queue} ${q.waiting}`).join(' · ')
        : `all ${s.queueDepth.length} queues empty`;
      $('stat-queue').title = s.queueDepth.map((q) => `${q.queue}: ${q.waiting} waiting`).join('\n');
    } else {
      $('stat-queue-value').textContent = '?';
      $('stat-queue-sub').textContent = 'queue not answering';
    }

    $('stat-dead-value').textContent = `${counts.dead}`;
    $('stat-dead-value').className = `stat-value ${counts.dead > 0 ? 'tone-bad' : ''}`;
    $('stat-dead-sub').textContent = `${counts.failedRetrying} retrying · ${counts.total} pushes in all`;

    $('stat-stale-value').textContent = `${s.staleMappings}`;
    $('stat-stale-value').className = `stat-value ${s.staleMappings > 0 ? 'tone-info' : ''}`;
  }

  // ------------------------------------------------------------------ runs

  const BAR_ORDER = [['succeeded', 'SUCCEEDED'], ['skipped', 'SKIPPED'], ['cancelled', 'CANCELLED'], ['pending', 'PENDING'],
    ['running', 'RUNNING'], ['failedRetrying', 'FAILED_RETRYING'], ['dead', 'DEAD']];

  function countsBar(c) {
    const bar = h('div', { class: 'bar', role: 'img', 'aria-label': BAR_ORDER.map(([k, s]) => `${c[k]} ${humanize(s)}`).join(', ') });
    for (const [k, s] of BAR_ORDER) {
      if (!c[k]) continue;
      const seg = h('span', { class: `bar-seg seg-${s.toLowerCase()}`, title: `${c[k]} ${humanize(s)}` });
      seg.style.width = `${(100 * c[k]) / Math.max(c.total, 1)}%`;
      bar.append(seg);
    }
    const legend = h('div', { class: 'bar-legend' },
      BAR_ORDER.filter(([k]) => c[k] > 0).map(([k, s]) => h('span', { class: `legend legend-${s.toLowerCase()}`, 'data-testid': `run-count-${s}` }, `${c[k]} ${humanize(s).toLowerCase()}`)),
      c.total === 0 ? h('span', { class: 'muted' }, 'no pushes') : null);
    return h('div', { class: 'progress' }, bar, legend);
  }

  function renderRuns(runs) {
    if (!changed('runs', [runs, state.canOperate, state.filters.runId, state.timeZone])) return;
    const body = clear($('runs-body'));
    $('runs-empty').hidden = runs.length > 0;
    for (const r of runs) {
      const failed = r.counts.dead + r.counts.failedRetrying;
      const row = h('tr', { 'data-testid': 'run-row', 'data-run-id': r.id, class: state.filters.runId === r.id ? 'selected' : null },
        h('td', { class: 'c-id' }, h('button', { type: 'button', class: 'link', onclick: () => selectRun(r.id) }, `#${r.id}`)),
        h('td', { class: 'c-period' }, r.period),
        h('td', { class: 'c-trigger' }, humanize(r.trigger), r.dryRun ? h('span', { class: 'tag' }, 'dry run') : null,
          h('div', { class: 'muted small' }, r.requestedBy)),
        h('td', { class: 'c-status' }, pill(r.status, 'run-status'), r.error ? h('div', { class: 'muted small clip', title: r.error }, r.error) : null),
        h('td', { class: 'c-started' }, timeEl(r.startedAt)),
        h('td', { class: 'c-duration', 'data-testid': 'run-duration' }, r.finishedAt ? fmtDuration(r.startedAt, r.finishedAt) : runningEl(r.startedAt)),
        h('td', { class: 'c-bar' }, countsBar(r.counts)),
        h('td', { class: 'actions c-actions' },
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => selectRun(r.id) }, 'Pushes'),
          state.canOperate && failed > 0 ? armableButton(`run:${r.id}`, r.id, failed, { 'data-testid': 'retry-run', 'data-run-id': r.id }) : null));
      body.append(row);
    }
  }

  function selectRun(id) {
    $('filter-run').value = id;
    setFilters({ runId: id });
    $('pushes-panel').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderRunFilter(runs) {
    const sel = $('filter-run');
    const current = state.filters.runId;
    if (!changed('runFilter', [runs.map((r) => [r.id, r.period, r.trigger, r.dryRun]), current])) return;
    clear(sel).append(h('option', { value: '' }, 'All runs'));
    const ids = new Set();
    for (const r of runs) {
      ids.add(r.id);
      sel.append(h('option', { value: r.id }, `#${r.id} · ${r.period} · ${humanize(r.trigger)}${r.dryRun ? ' (dry run)' : ''}`));
    }
    if (current && !ids.has(current)) sel.append(h('option', { value: current }, `#${current}`));
    sel.value = current;
  }

  // ------------------------------------------------------------------ pushes

  function renderTabs(counts) {
    if (!changed('tabs', [counts, state.filters.status])) return;
    const nav = clear($('status-tabs'));
    for (const s of STATUSES) {
      const n = counts ? counts[COUNT_KEY[s]] : null;
      const active = state.filters.status === s;
      nav.append(h('button', {
        type: 'button', role: 'tab', class: `tab tab-${s.toLowerCase()}${active ? ' active' : ''}`, 'aria-selected': active ? 'true' : 'false',
        'data-testid': `tab-${s}`, 'data-status': s, onclick: () => { if (state.filters.status !== s) setFilters({ status: s }); },
      }, s === 'ALL' ? 'All' : humanize(s), n === null ? null : h('span', { class: 'tab-count' }, `${n}`)));
    }
  }

  /** What an empty table says, per status tab. */
  function emptyText() {
    const f = state.filters;
    const filtered = !!(f.period || f.customerId || f.runId);
    const where = filtered ? ' match these filters' : '';
    switch (f.status) {
      case 'ALL': return filtered ? 'No pushes match these filters.' : 'No pushes yet: every run creates one per product mapping.';
      case 'PENDING': return `No pending pushes${where}: nothing is waiting to be sent.`;
      case 'RUNNING': return `No push${where} is being sent right now.`;
      case 'FAILED_RETRYING': return `No failed pushes${where} are waiting for a retry.`;
      case 'DEAD': return `No dead pushes${where}: nothing needs attention.`;
      default: return `No ${humanize(f.status).toLowerCase()} pushes${filtered ? ' match these filters' : ' yet'}.`;
    }
  }

  function renderPushes(conn) {
    const page = state.cursors.length;
    if (!changed('pushes', [conn, page, state.canOperate, state.filters, state.timeZone])) return;
    const body = clear($('pushes-body'));
    const rows = conn.edges.map((e) => e.node);
    $('pushes-empty').hidden = rows.length > 0;
    $('pushes-empty').textContent = emptyText();
    for (const p of rows) {
      const row = h('tr', { 'data-testid': 'push-row', 'data-push-id': p.id, 'data-status': p.status, class: state.detailId === p.id ? 'selected' : null, onclick: () => openDetail(p.id) },
        h('td', { class: 'c-id' }, h('button', { type: 'button', class: 'link', 'data-testid': 'push-open', 'aria-haspopup': 'dialog' }, `#${p.id}`)),
        h('td', { class: 'c-customer' }, p.customer ? p.customer.accountName : h('span', { class: 'muted' }, 'deleted'),
          h('div', { class: 'muted small' }, p.customer ? p.customer.externalId : '')),
        h('td', { class: 'c-product' }, moduleName(p.productModule), h('div', { class: 'muted small' }, humanize(p.usage))),
        h('td', { class: 'c-period' }, p.period, p.dryRun ? h('span', { class: 'tag' }, 'dry') : null),
        h('td', { class: 'c-run' }, p.syncRun ? `#${p.syncRun.id}` : '—'),
        h('td', { class: 'num c-qty', 'data-testid': 'push-qty' }, h('span', { class: 'qty-label' }, 'Qty '), p.quantity === null ? '—' : `${p.quantity}`),
        h('td', { class: 'c-status' }, pill(p.status, 'push-status'), p.status === 'FAILED_RETRYING' && p.nextAttemptAt ? h('div', { class: 'muted small' }, 'next ', timeEl(p.nextAttemptAt)) : null),
        h('td', { class: 'num c-attempts' }, `${p.attempts}/${p.maxAttempts}`),
        h('td', { class: 'err-cell c-error' }, p.lastErrorCode ? h('code', { class: 'code-err' }, p.lastErrorCode) : h('span', { class: 'muted' }, '—'),
          p.lastError ? h('div', { class: 'muted small clip', title: p.lastError }, p.lastError) : null),
        h('td', { class: 'c-updated', 'data-testid': 'push-updated' }, timeEl(p.updatedAt)),
        h('td', { class: 'actions c-actions' }, state.canOperate && p.retryable
          ? h('button', { type: 'button', class: 'btn btn-small btn-primary', 'data-testid': 'retry-push', 'data-push-id': p.id, onclick: (ev) => { ev.stopPropagation(); retryPush(p.id, ev.currentTarget); } }, 'Retry')
          : null));
      body.append(row);
    }
    const first = (page - 1) * PAGE_SIZE + 1;
    $('page-info').textContent = rows.length ? `Showing ${first}–${first + rows.length - 1}${conn.pageInfo.hasNextPage ? '' : ' (end)'}` : '';
    $('page-prev').disabled = page <= 1;
    $('page-next').disabled = !conn.pageInfo.hasNextPage;
    $('page-next').dataset.cursor = conn.pageInfo.endCursor || '';
  }

  function renderBulkRetry(counts) {
    const btn = $('bulk-retry');
    const failed = counts.dead + counts.failedRetrying;
    const runId = state.filters.runId;
    const show = state.canOperate && !!runId && failed > 0;
    btn.hidden = !show;
    if (!show) return;
    btn.dataset.armKey = `bulk:${runId}`;
    btn.dataset.runId = runId;
    btn.dataset.count = `${failed}`;
    btn.dataset.label = `Retry ${failed} failed in run #${runId}`;
    applyArmed(btn);
  }

  // ------------------------------------------------------------------ retries

  function reportUserErrors(title, errors) {
    toast('error', title, errors.map((e) => ({ code: e.code, text: e.message, testid: 'user-error' })));
  }

  async function retryPush(id, button) {
    if (button) { button.disabled = true; button.textContent = 'Retrying…'; }
    await guarded(async () => {
      const data = await gql(M_RETRY, { id });
      const r = data.retryPush;
      if (r.userErrors.length) {
        reportUserErrors(`Push #${id} was not retried`, r.userErrors);
      } else {
        toast('success', `Push #${id} queued for retry`, [{ text: `Status now ${humanize(r.push.status).toLowerCase()}; it is sent shortly.` }]);
      }
    });
    if (button && button.isConnected) { button.disabled = false; button.textContent = 'Retry'; }
    await refreshAll();
    setTimeout(refreshAll, 1200);
  }

  // Two-step confirmation without a modal dialog: the first click arms a bulk retry, the second
  // (within ARM_MS) confirms it. The armed state lives here, not in the button, so a refresh that
  // re-renders the table keeps it.

  /** A bulk-retry button for run `runId` that arms under `key`. */
  function armableButton(key, runId, count, attrs) {
    const btn = h('button', { type: 'button', class: 'btn btn-small btn-danger-soft', ...attrs });
    btn.dataset.armKey = key;
    btn.dataset.runId = runId;
    btn.dataset.count = `${count}`;
    btn.dataset.label = `Retry ${count} failed`;
    btn.addEventListener('click', (ev) => retryRun(ev.currentTarget));
    applyArmed(btn);
    return btn;
  }

  const isArmed = (key) => !!state.armed && state.armed.key === key && Date.now() <= state.armed.until;

  /** Show a bulk-retry button as the armed state says. */
  function applyArmed(btn) {
    const armed = isArmed(btn.dataset.armKey);
    btn.classList.toggle('armed', armed);
    btn.dataset.confirm = armed ? 'armed' : '';
    const text = armed ? `Confirm: retry ${btn.dataset.count}?` : btn.dataset.label;
    if (!btn.disabled && btn.textContent !== text) btn.textContent = text;
    btn.setAttribute('aria-label', armed ? `${text} Click again to retry them; it disarms after ${ARM_MS / 1000} seconds.` : text);
  }

  function applyArmedEverywhere() {
    for (const btn of document.querySelectorAll('[data-arm-key]')) applyArmed(btn);
  }

  function disarm() {
    state.armed = null;
    applyArmedEverywhere();
  }

  async function retryRun(button) {
    const key = button.dataset.armKey;
    const runId = button.dataset.runId;
    if (!isArmed(key)) {
      state.armed = { key, until: Date.now() + ARM_MS };
      applyArmedEverywhere();
      return;
    }
    state.armed = null;
    button.disabled = true;
    button.classList.add('armed');
    button.textContent = 'Retrying…';
    await guarded(async () => {
      const data = await gql(M_RETRY_RUN, { id: runId });
      const r = data.retryFailedPushes;
      if (r.userErrors.length) {
        reportUserErrors(`Run #${runId} was not retried`, r.userErrors);
      } else {
        const skipped = [
          [r.skippedSuperseded, 'superseded by a newer push of their addition'],
          [r.skippedOrphaned, 'whose mapping was removed'],
          [r.skippedInFlight, 'whose addition has another push in flight'],
        ].filter(([n]) => n > 0).map(([n, why]) => ({ text: `${n} left alone: ${why}.` }));
        toast('success', `${r.pushes.length} push${r.pushes.length === 1 ? '' : 'es'} of run #${runId} queued for retry`, skipped);
      }
    });
    state.rendered = {};
    button.disabled = false;
    applyArmedEverywhere();
    await refreshAll();
    setTimeout(refreshAll, 1200);
  }

  // ------------------------------------------------------------------ detail drawer

  // The detail is a modal dialog: the page behind it is inert, focus moves into it and stays there
  // (Tab and Shift-Tab cycle), Escape or the close button closes it and focus returns to the row.

  /** The page behind the dialog. */
  const BEHIND_DIALOG = ['.topbar', 'main'];

  function openDetail(id) {
    if (!state.detailId) state.detailOpener = document.activeElement;
    state.detailId = id;
    $('detail').hidden = false;
    $('detail-backdrop').hidden = false;
    for (const sel of BEHIND_DIALOG) document.querySelector(sel).inert = true;
    $('detail-kicker').textContent = 'Push';
    $('detail-title').textContent = `#${id}`;
    clear($('detail-body')).append(h('p', { class: 'muted' }, 'Loading…'));
    delete state.rendered.detail;
    for (const tr of document.querySelectorAll('#pushes-body tr')) tr.classList.toggle('selected', tr.dataset.pushId === id);
    $('detail-close').focus();
    loadDetail(id);
  }

  function closeDetail() {
    const id = state.detailId;
    state.detailId = null;
    $('detail').hidden = true;
    $('detail-backdrop').hidden = true;
    for (const sel of BEHIND_DIALOG) document.querySelector(sel).inert = false;
    delete state.rendered.detail;
    for (const tr of document.querySelectorAll('#pushes-body tr.selected')) tr.classList.remove('selected');
    if (!id) return;
    // Back to where the user was: the opener, or the row's button if a refresh replaced it.
    const opener = state.detailOpener && state.detailOpener.isConnected && state.detailOpener !== document.body
      ? state.detailOpener
      : document.querySelector(`#pushes-body tr[data-push-id="${id}"] [data-testid="push-open"]`);
    state.detailOpener = null;
    if (opener) opener.focus();
  }

  /** Keep Tab inside the open dialog. */
  function trapFocus(ev) {
    if (ev.key !== 'Tab' || !state.detailId) return;
    const focusable = [...$('detail').querySelectorAll('button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])')]
      .filter((el) => !el.disabled && el.getClientRects().length > 0);
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    const inside = $('detail').contains(document.activeElement);
    if (ev.shiftKey && (document.activeElement === first || !inside)) {
      ev.preventDefault();
      last.focus();
    } else if (!ev.shiftKey && (document.activeElement === last || !inside)) {
      ev.preventDefault();
      first.focus();
    }
  }

  const field = (label, value, testid) => h('div', { class: 'kv' }, h('dt', {}, label), h('dd', { 'data-testid': testid || null }, value === null || value === undefined || value === '' ? '—' : value));

  /** Calls grouped by attempt number, each group and the groups in time order. */
  function groupAttempts(history) {
    const byAttempt = new Map();
    for (const c of history) {
      if (!byAttempt.has(c.attempt)) byAttempt.set(c.attempt, []);
      byAttempt.get(c.attempt).push(c);
    }
    const at = (c) => new Date(c.at).getTime() || 0;
    return [...byAttempt.entries()]
      .map(([attempt, calls]) => ({ attempt, calls: calls.slice().sort((x, y) => at(x) - at(y)) }))
      .sort((x, y) => at(x.calls[0]) - at(y.calls[0]) || x.attempt - y.attempt);
  }

  function worstOutcome(calls) {
    const outcomes = calls.map((c) => String(c.outcome).toUpperCase());
    if (outcomes.includes('ERROR')) return 'ERROR';
    if (outcomes.includes('REJECTED')) return 'REJECTED';
    return outcomes.length ? outcomes[outcomes.length - 1] : 'OK';
  }

  function renderDetail(p, audit) {
    if (!changed('detail', [p, audit, state.canOperate, state.timeZone])) return;
    // Redrawn while focus is inside: it goes to the close button, not out of the dialog.
    const hadFocus = $('detail-body').contains(document.activeElement);
    const body = clear($('detail-body'));
    if (hadFocus) $('detail-close').focus();
    if (!p) {
      $('detail-title').textContent = 'Not found';
      body.append(h('p', { class: 'muted' }, 'This push does not exist (or belongs to another tenant).'));
      return;
    }
    $('detail-kicker').textContent = `Push · run #${p.syncRun ? p.syncRun.id : '?'} · ${p.period}`;
    $('detail-title').textContent = '';
    $('detail-title').append(`#${p.id} `, pill(p.status, 'detail-status'));

    const actions = h('div', { class: 'detail-actions' });
    if (RETRYABLE.has(p.status) && !p.retryable) {
      // Only the newest push of a mapped addition may write it: no Retry for this one.
      actions.append(h('span', { class: 'muted small', 'data-testid': 'detail-not-retryable' },
        p.writeBlockedBy === 'PUSH_SUPERSEDED'
          ? 'Not retryable: a newer push of the same addition exists — retry that one instead.'
          : 'Not retryable: its product mapping was removed or now points to another addition.'));
    } else if (state.canOperate && p.retryable) {
      actions.append(h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'detail-retry', onclick: (ev) => retryPush(p.id, ev.currentTarget) }, 'Retry now'),
        h('span', { class: 'muted small' }, 'A fresh budget of attempts; audited with your name.'));
    } else if (!state.canOperate && p.retryable) {
      actions.append(h('span', { class: 'muted small' }, 'Read-only: an operator can retry this push.'));
    }
    if (actions.childNodes.length) body.append(actions);

    if (p.lastErrorCode || p.lastError) {
      body.append(h('div', { class: 'error-box', 'data-testid': 'detail-last-error' },
        h('div', { class: 'error-head' }, h('code', {}, p.lastErrorCode || 'ERROR'), p.lastHttpStatus ? h('span', { class: 'http' }, `HTTP ${p.lastHttpStatus}`) : null),
        p.lastError ? h('p', {}, p.lastError) : null));
    }
    if (p.skipReason) body.append(h('div', { class: 'note-box' }, 'Skipped: ', h('code', {}, p.skipReason)));
    if (p.driftFromQuantity !== null && p.driftFromQuantity !== undefined) {
      body.append(h('div', { class: 'note-box', 'data-testid': 'detail-drift' }, 'Drift: ConnectWise held ',
        h('strong', {}, `${p.driftFromQuantity}`), ', not the quantity this service last set — somebody changed the addition by hand.'));
    }

    body.append(h('h3', {}, 'Summary'), h('dl', { class: 'kvs' },
      field('Customer', p.customer ? `${p.customer.accountName} (ID ${p.customer.id}, ${p.customer.externalId})` : null),
      field('Product', `${moduleName(p.productModule)} · ${humanize(p.usage)}`),
      field('Method', humanize(p.method)),
      field('Value → quantity', p.value === null ? null : `${p.value} → ${p.quantity}`),
      p.heldQuantity === null ? null : field('ConnectWise held', `${p.heldQuantity}`, 'detail-held'),
      p.cancelReason ? field('Cancelled because', h('code', {}, p.cancelReason)) : null,
      field('Sample days', `${p.sampleDays}${p.fallback ? ' (fallback)' : ''}`),
      field('ConnectWise', `company ${p.cwCompanyId} · agreement ${p.cwAgreementId} · addition ${p.cwAdditionId}`),
      field('Attempts', `${p.attempts} of ${p.maxAttempts}`),
      field('Next attempt', p.nextAttemptAt ? h('span', {}, fmtTime(p.nextAttemptAt), ' (', timeEl(p.nextAttemptAt), ')') : null, 'detail-next-attempt'),
      field('Ticket', p.ticketId ? `ConnectWise ticket #${p.ticketId}` : null, 'detail-ticket'),
      field('Created', fmtTime(p.createdAt)),
      field('Updated', fmtTime(p.updatedAt)),
      field('Finished', p.finishedAt ? fmtTime(p.finishedAt) : null)));

    // One timeline entry per attempt, with the ConnectWise calls it made (oldest first).
    const attempts = groupAttempts(p.attemptHistory);
    const calls = p.attemptHistory.length;
    body.append(h('h3', {}, 'Attempts ', h('span', { class: 'muted small' }, `${attempts.length} attempt${attempts.length === 1 ? '' : 's'}, ${calls} call${calls === 1 ? '' : 's'} to ConnectWise`)));
    if (!attempts.length) body.append(h('p', { class: 'muted' }, 'No call was made yet.'));
    const list = h('ol', { class: 'timeline', 'data-testid': 'attempt-timeline' });
    for (const a of attempts) {
      const outcome = worstOutcome(a.calls);
      list.append(h('li', { class: `tl tl-${outcome.toLowerCase()}`, 'data-testid': 'attempt', 'data-attempt': a.attempt },
        h('div', { class: 'tl-head' }, h('strong', {}, `Attempt ${a.attempt}`),
          h('span', { class: `chip-outcome out-${outcome.toLowerCase()}` }, outcome),
          h('span', { class: 'muted small' }, fmtTime(a.calls[0].at))),
        a.calls.map((c) => h('div', { class: 'tl-call', 'data-testid': 'attempt-call' },
          h('div', { class: 'tl-call-head' },
            h('span', { class: `dot-outcome out-${String(c.outcome).toLowerCase()}`, title: c.outcome }),
            h('span', {}, humanize(c.step)),
            c.httpStatus ? h('span', { class: 'http' }, `HTTP ${c.httpStatus}`) : h('span', { class: 'http' }, 'no response'),
            h('span', { class: 'muted small' }, `${c.durationMs} ms`),
            c.quantity !== null ? h('span', { class: 'muted small' }, c.step === 'PATCH_QUANTITY' ? `sent ${c.quantity}` : `ConnectWise had ${c.quantity}`) : null,
            c.requestId ? h('span', { class: 'muted small' }, 'request ', h('code', {}, c.requestId)) : null),
          c.errorCode || c.errorMessage ? h('div', { class: 'tl-err' }, c.errorCode ? h('code', {}, c.errorCode) : null, c.errorMessage ? ` ${c.errorMessage}` : '') : null))));
    }
    body.append(list);

    if (audit.length) {
      body.append(h('h3', {}, 'Activity'), h('ul', { class: 'activity' },
        audit.map((e) => h('li', {}, h('code', {}, e.action), ' by ', h('strong', {}, e.actor), ' ', timeEl(e.at)))));
    }
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
      if (t) signIn(t);
    });
    $('sign-out').addEventListener('click', () => signOut(null));
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = $('filter-customer').value.trim();
      const rest = { period: $('filter-period').value, runId: $('filter-run').value };
      // Unchanged text keeps the customer already chosen.
      if (state.filters.customerId && text && text === state.customerLabel) setFilters(rest);
      else applyCustomerFilter(text, rest);
    });
    $('tz-toggle').addEventListener('click', toggleTimeZone);
    $('filter-run').addEventListener('change', () => setFilters({ runId: $('filter-run').value }));
    $('filter-period').addEventListener('change', () => setFilters({ period: $('filter-period').value }));
    $('filter-clear').addEventListener('click', () => {
      $('filter-period').value = '';
      $('filter-customer').value = '';
      $('filter-run').value = '';
      state.customerLabel = '';
      clear($('customer-choices'));
      setFilters({ period: '', customerId: '', runId: '', status: 'ALL' });
    });
    $('page-next').addEventListener('click', () => {
      const c = $('page-next').dataset.cursor;
      if (!c) return;
      state.cursors.push(c);
      loadPushes();
    });
    $('page-prev').addEventListener('click', () => {
      if (state.cursors.length > 1) state.cursors.pop();
      loadPushes();
    });
    $('bulk-retry').addEventListener('click', (ev) => retryRun(ev.currentTarget));
    $('detail-close').addEventListener('click', closeDetail);
    $('detail-backdrop').addEventListener('click', closeDetail);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && state.detailId) {
        ev.preventDefault();
        closeDetail();
      } else {
        trapFocus(ev);
      }
    });
    $('auto-refresh').addEventListener('change', () => { if ($('auto-refresh').checked) refreshAll(); });
    window.addEventListener('hashchange', () => {
      if (!state.me) return;
      readHash();
      state.rendered = {};
      refreshAll();
    });
  }

  wire();
  if (state.token) signIn(state.token);
  else showLogin(null);
})();
