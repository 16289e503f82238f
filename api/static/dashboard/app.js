// Consumption Sync operations dashboard. Plain JS, no build step. Speaks GraphQL at /graphql with
// the bearer token kept in sessionStorage. Every piece of data is put into the page as text
// (textContent / text nodes / attributes) — never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'csync.dashboard.token';
  const PAGE_SIZE = 25;
  const REFRESH_MS = 5000;
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
    timer: null,
    rendered: {}, // last rendered data per region (skip re-rendering what did not change)
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

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString('en-GB', {
      timeZone: 'UTC', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
    }) + ' UTC';
  }

  function relTime(iso) {
    if (!iso) return '';
    const d = new Date(iso).getTime();
    if (Number.isNaN(d)) return '';
    const s = Math.round((d - Date.now()) / 1000);
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
    const ms = (toIso ? new Date(toIso).getTime() : Date.now()) - new Date(fromIso).getTime();
    if (!(ms >= 0)) return '—';
    if (ms < 1000) return `${ms} ms`;
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  /** A time cell: relative time, the absolute time as a tooltip. */
  const timeEl = (iso, cls) => h('time', { class: cls || 'time', datetime: iso || null, title: iso ? fmtTime(iso) : null }, iso ? relTime(iso) : '—');

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

  async function gql(query, variables) {
    let res;
    try {
      res = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${state.token}` },
        body: JSON.stringify({ query, variables: variables || {} }),
      });
    } catch (e) {
      throw new Error('The server did not answer. Check your connection.');
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) {
      throw new AuthError(body && body.errors && body.errors[0] ? body.errors[0].message : 'token rejected');
    }
    if (!res.ok || !body) throw new Error(`The server answered HTTP ${res.status}.`);
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
        id status period productModule usage quantity dryRun attempts maxAttempts
        lastErrorCode lastError lastHttpStatus nextAttemptAt updatedAt
        customer { id accountName } syncRun { id }
      } }
      pageInfo { hasNextPage endCursor }
    }
  }`;

  const Q_PUSH = `query DashboardPush($id: ID!) {
    push(id: $id) {
      id status period productModule usage method value quantity sampleDays fallback skipReason dryRun
      attempts maxAttempts nextAttemptAt lastErrorCode lastError lastHttpStatus ticketId
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
    retryFailedPushes(syncRunId: $id) { pushes { id } userErrors { code field message } }
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
    readHash();
    renderTabs(null);
    await refreshAll();
    startTimer();
  }

  // ------------------------------------------------------------------ filters <-> URL hash

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const status = p.get('status');
    state.filters = {
      status: STATUSES.includes(status) ? status : 'ALL',
      period: /^\d{4}-\d{2}$/.test(p.get('period') || '') ? p.get('period') : '',
      customerId: /^\d+$/.test(p.get('customer') || '') ? p.get('customer') : '',
      runId: /^\d+$/.test(p.get('run') || '') ? p.get('run') : '',
    };
    $('filter-period').value = state.filters.period;
    $('filter-customer').value = state.filters.customerId;
    state.cursors = [null];
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
      if (e instanceof AuthError) {
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
      const data = await gql(Q_OVERVIEW);
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
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
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
    if (!changed('banners', s)) return;
    const out = [];
    if (s.connectionBroken) {
      out.push(banner('danger', 'banner-connection-broken', 'ConnectWise connection broken.',
        `${sentence(s.connectionBrokenReason || 'ConnectWise rejected the credentials')} Pushes stop until an admin fixes the ConnectWise settings; then retry the dead pushes.`,
        s.connectionBrokenSince ? h('span', { class: 'muted' }, ' Since ', timeEl(s.connectionBrokenSince), '.') : null));
    }
    if (s.workersAlive === 0) {
      out.push(banner('warning', 'banner-no-workers', 'No workers alive.',
        s.workers.length
          ? `The last worker was seen ${relTime(s.workers[0].lastSeenAt)}. Nothing is pushed, retried or scheduled until a worker runs.`
          : 'No worker has reported a heartbeat. Nothing is pushed, retried or scheduled until a worker runs.'));
    }
    if (s.pausedUntil) {
      out.push(banner('warning', 'banner-paused', 'Rate limited by ConnectWise.',
        `All calls are paused until ${fmtTime(s.pausedUntil)} (${relTime(s.pausedUntil)}).`));
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
    if (!changed('stats', [s, counts])) return;
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
    if (!changed('runs', [runs, state.canOperate, state.filters.runId])) return;
    const body = clear($('runs-body'));
    $('runs-empty').hidden = runs.length > 0;
    for (const r of runs) {
      const failed = r.counts.dead + r.counts.failedRetrying;
      const row = h('tr', { 'data-testid': 'run-row', 'data-run-id': r.id, class: state.filters.runId === r.id ? 'selected' : null },
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => selectRun(r.id) }, `#${r.id}`)),
        h('td', {}, r.period),
        h('td', {}, humanize(r.trigger), r.dryRun ? h('span', { class: 'tag' }, 'dry run') : null,
          h('div', { class: 'muted small' }, r.requestedBy)),
        h('td', {}, pill(r.status, 'run-status'), r.error ? h('div', { class: 'muted small clip', title: r.error }, r.error) : null),
        h('td', {}, timeEl(r.startedAt)),
        h('td', {}, r.finishedAt ? fmtDuration(r.startedAt, r.finishedAt) : h('span', { class: 'muted' }, `running ${fmtDuration(r.startedAt)}`)),
        h('td', {}, countsBar(r.counts)),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => selectRun(r.id) }, 'Pushes'),
          state.canOperate && failed > 0
            ? h('button', { type: 'button', class: 'btn btn-small btn-danger-soft', 'data-testid': 'retry-run', 'data-run-id': r.id, onclick: (ev) => retryRun(r.id, failed, ev.currentTarget) }, `Retry ${failed} failed`)
            : null));
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

  function renderPushes(conn) {
    const page = state.cursors.length;
    if (!changed('pushes', [conn, page, state.canOperate])) return;
    const body = clear($('pushes-body'));
    const rows = conn.edges.map((e) => e.node);
    $('pushes-empty').hidden = rows.length > 0;
    $('pushes-empty').textContent = state.filters.status === 'ALL' ? 'No pushes match these filters.' : `No ${humanize(state.filters.status).toLowerCase()} pushes match these filters.`;
    for (const p of rows) {
      const row = h('tr', { 'data-testid': 'push-row', 'data-push-id': p.id, 'data-status': p.status, class: state.detailId === p.id ? 'selected' : null, onclick: () => openDetail(p.id) },
        h('td', {}, h('button', { type: 'button', class: 'link', 'data-testid': 'push-open' }, `#${p.id}`)),
        h('td', {}, p.customer ? p.customer.accountName : h('span', { class: 'muted' }, 'deleted'), h('div', { class: 'muted small' }, p.customer ? `ID ${p.customer.id}` : '')),
        h('td', {}, moduleName(p.productModule), h('div', { class: 'muted small' }, humanize(p.usage))),
        h('td', {}, p.period, p.dryRun ? h('span', { class: 'tag' }, 'dry') : null),
        h('td', {}, p.syncRun ? `#${p.syncRun.id}` : '—'),
        h('td', { class: 'num' }, p.quantity === null ? '—' : `${p.quantity}`),
        h('td', {}, pill(p.status, 'push-status'), p.status === 'FAILED_RETRYING' && p.nextAttemptAt ? h('div', { class: 'muted small' }, 'next ', timeEl(p.nextAttemptAt)) : null),
        h('td', { class: 'num' }, `${p.attempts}/${p.maxAttempts}`),
        h('td', { class: 'err-cell' }, p.lastErrorCode ? h('code', { class: 'code-err' }, p.lastErrorCode) : h('span', { class: 'muted' }, '—'),
          p.lastError ? h('div', { class: 'muted small clip', title: p.lastError }, p.lastError) : null),
        h('td', {}, timeEl(p.updatedAt)),
        h('td', { class: 'actions' }, state.canOperate && RETRYABLE.has(p.status)
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
    const show = state.canOperate && !!state.filters.runId && failed > 0;
    btn.hidden = !show;
    if (show && !btn.dataset.confirm) {
      btn.textContent = `Retry ${failed} failed in run #${state.filters.runId}`;
      btn.dataset.count = `${failed}`;
    }
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

  async function retryRun(runId, count, button) {
    // Two-step confirmation without a modal dialog: the first click arms the button.
    if (button.dataset.confirm !== 'armed') {
      button.dataset.confirm = 'armed';
      const previous = button.textContent;
      button.textContent = `Confirm: retry ${count}?`;
      button.classList.add('armed');
      setTimeout(() => {
        if (button.isConnected && button.dataset.confirm === 'armed') {
          delete button.dataset.confirm;
          button.textContent = previous;
          button.classList.remove('armed');
        }
      }, 4000);
      return;
    }
    delete button.dataset.confirm;
    button.disabled = true;
    button.textContent = 'Retrying…';
    await guarded(async () => {
      const data = await gql(M_RETRY_RUN, { id: runId });
      const r = data.retryFailedPushes;
      if (r.userErrors.length) {
        reportUserErrors(`Run #${runId} was not retried`, r.userErrors);
      } else {
        toast('success', `${r.pushes.length} push${r.pushes.length === 1 ? '' : 'es'} of run #${runId} queued for retry`, []);
      }
    });
    state.rendered = {};
    button.classList.remove('armed');
    button.disabled = false;
    await refreshAll();
    setTimeout(refreshAll, 1200);
  }

  // ------------------------------------------------------------------ detail drawer

  function openDetail(id) {
    state.detailId = id;
    $('detail').hidden = false;
    $('detail-backdrop').hidden = false;
    $('detail-title').textContent = `#${id}`;
    clear($('detail-body')).append(h('p', { class: 'muted' }, 'Loading…'));
    delete state.rendered.detail;
    for (const tr of document.querySelectorAll('#pushes-body tr')) tr.classList.toggle('selected', tr.dataset.pushId === id);
    loadDetail(id);
  }

  function closeDetail() {
    state.detailId = null;
    $('detail').hidden = true;
    $('detail-backdrop').hidden = true;
    delete state.rendered.detail;
    for (const tr of document.querySelectorAll('#pushes-body tr.selected')) tr.classList.remove('selected');
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
    if (!changed('detail', [p, audit, state.canOperate])) return;
    const body = clear($('detail-body'));
    if (!p) {
      $('detail-title').textContent = 'Not found';
      body.append(h('p', { class: 'muted' }, 'This push does not exist (or belongs to another tenant).'));
      return;
    }
    $('detail-kicker').textContent = `Push · run #${p.syncRun ? p.syncRun.id : '?'} · ${p.period}`;
    $('detail-title').textContent = '';
    $('detail-title').append(`#${p.id} `, pill(p.status, 'detail-status'));

    const actions = h('div', { class: 'detail-actions' });
    if (state.canOperate && RETRYABLE.has(p.status)) {
      actions.append(h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'detail-retry', onclick: (ev) => retryPush(p.id, ev.currentTarget) }, 'Retry now'),
        h('span', { class: 'muted small' }, 'A fresh budget of attempts; audited with your name.'));
    } else if (!state.canOperate && RETRYABLE.has(p.status)) {
      actions.append(h('span', { class: 'muted small' }, 'Read-only: an operator can retry this push.'));
    }
    if (actions.childNodes.length) body.append(actions);

    if (p.lastErrorCode || p.lastError) {
      body.append(h('div', { class: 'error-box', 'data-testid': 'detail-last-error' },
        h('div', { class: 'error-head' }, h('code', {}, p.lastErrorCode || 'ERROR'), p.lastHttpStatus ? h('span', { class: 'http' }, `HTTP ${p.lastHttpStatus}`) : null),
        p.lastError ? h('p', {}, p.lastError) : null));
    }
    if (p.skipReason) body.append(h('div', { class: 'note-box' }, 'Skipped: ', h('code', {}, p.skipReason)));

    body.append(h('h3', {}, 'Summary'), h('dl', { class: 'kvs' },
      field('Customer', p.customer ? `${p.customer.accountName} (ID ${p.customer.id}, ${p.customer.externalId})` : null),
      field('Product', `${moduleName(p.productModule)} · ${humanize(p.usage)}`),
      field('Method', humanize(p.method)),
      field('Value → quantity', p.value === null ? null : `${p.value} → ${p.quantity}`),
      field('Sample days', `${p.sampleDays}${p.fallback ? ' (fallback)' : ''}`),
      field('ConnectWise', `company ${p.cwCompanyId} · agreement ${p.cwAgreementId} · addition ${p.cwAdditionId}`),
      field('Attempts', `${p.attempts} of ${p.maxAttempts}`),
      field('Next attempt', p.nextAttemptAt ? h('span', {}, fmtTime(p.nextAttemptAt), ' (', relTime(p.nextAttemptAt), ')') : null, 'detail-next-attempt'),
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
      const customer = $('filter-customer').value.trim();
      if (customer && !/^\d+$/.test(customer)) {
        toast('error', 'Customer ID must be a number', []);
        return;
      }
      setFilters({ period: $('filter-period').value, customerId: customer, runId: $('filter-run').value });
    });
    $('filter-run').addEventListener('change', () => setFilters({ runId: $('filter-run').value }));
    $('filter-period').addEventListener('change', () => setFilters({ period: $('filter-period').value }));
    $('filter-clear').addEventListener('click', () => {
      $('filter-period').value = '';
      $('filter-customer').value = '';
      $('filter-run').value = '';
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
    $('bulk-retry').addEventListener('click', (ev) => retryRun(state.filters.runId, Number(ev.currentTarget.dataset.count || 0), ev.currentTarget));
    $('detail-close').addEventListener('click', closeDetail);
    $('detail-backdrop').addEventListener('click', closeDetail);
    document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && state.detailId) closeDetail(); });
    $('auto-refresh').addEventListener('change', () => { if ($('auto-refresh').checked) refreshAll(); });
    window.addEventListener('hashchange', () => { if (state.me) { readHash(); state.rendered = {}; refreshAll(); } });
  }

  wire();
  if (state.token) signIn(state.token);
  else showLogin(null);
})();
