// Starts GraphiQL (React, ReactDOM and GraphiQL are the vendored production builds loaded before
// this file). The Authorization header is prefilled from the dashboard's session in this tab, a bar
// above says whether a token is sent and whether the server took it, and the schema is fetched
// again whenever the Authorization header changes.
'use strict';

(() => {
  /** Where the dashboard keeps its token (sessionStorage: this tab, this origin). */
  const DASHBOARD_TOKEN_KEY = 'csync.dashboard.token';
  const ENDPOINT = '/graphql';
  const INTROSPECTION = 'IntrospectionQuery';
  const DEFAULT_QUERY = `# Ctrl-Enter runs the query; the token goes under Headers.
# The book icon (top left) lists every field.
{
  me { sub tenantId roles }
  systemStatus { workersAlive nextScheduledRunAt }
}
`;

  const bar = document.getElementById('auth-bar');
  const barText = document.getElementById('auth-text');

  function sessionToken() {
    try {
      return sessionStorage.getItem(DASHBOARD_TOKEN_KEY);
    } catch (e) {
      return null; // storage disabled
    }
  }

  /** The headers editor's text as an object; `{}` when empty, `null` when not a JSON object. */
  function parseHeaders(text) {
    if (!text || !text.trim()) return {};
    try {
      const value = JSON.parse(text);
      return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
    } catch (e) {
      return null;
    }
  }

  /** The Authorization value of a headers text: '' when there is none, `null` when unparsable. */
  function authorizationOf(text) {
    const headers = parseHeaders(text);
    if (!headers) return null;
    const key = Object.keys(headers).find((k) => k.toLowerCase() === 'authorization');
    return key ? String(headers[key]) : '';
  }

  /** A bearer token's claims, for display only (the server verifies the token). */
  function claimsOf(authorization) {
    const m = /^Bearer\s+[\w-]+\.([\w-]+)\.[\w-]*$/i.exec((authorization || '').trim());
    if (!m) return null;
    try {
      return JSON.parse(atob(m[1].replace(/-/g, '+').replace(/_/g, '/')));
    } catch (e) {
      return null;
    }
  }

  /** Set the bar: `parts` are strings (text) or `['code', text]` (text in a code element). */
  function setBar(state, ...parts) {
    bar.dataset.state = state;
    while (barText.firstChild) barText.removeChild(barText.firstChild);
    for (const p of parts) {
      if (Array.isArray(p)) {
        const el = document.createElement(p[0]);
        el.textContent = p[1];
        barText.append(el);
      } else {
        barText.append(document.createTextNode(p));
      }
    }
  }

  function who(authorization) {
    const c = claimsOf(authorization);
    if (!c) return '';
    const roles = Array.isArray(c.roles) ? c.roles.join(', ') : '';
    return ` (tenant "${c.tenant}", ${roles || 'no role'})`;
  }

  function showMissing() {
    setBar('missing', 'No token: requests go without ', ['code', 'Authorization'], ', so the API answers 401 and Docs and completion stay empty. Add ',
      ['code', '{"Authorization": "Bearer <token>"}'], ' under Headers below (the dev token printed when ', ['code', 'api'],
      ' started, or one from ', ['code', 'api token --tenant demo --role admin'],
      '), or sign in on the dashboard in this tab first. The schema is fetched again when the header changes.');
  }

  const fromSession = sessionToken();
  const initialHeaders = fromSession ? JSON.stringify({ Authorization: `Bearer ${fromSession}` }, null, 2) : '';
  let headersText = initialHeaders;
  let schemaAuthorization = authorizationOf(initialHeaders);

  /** What the last introspection said, for the bar. */
  function noteSchemaAnswer(authorization, status, body) {
    if (authorizationOf(headersText) !== authorization) return; // the header changed meanwhile
    if (status === 200 && body && body.data && body.data.__schema) {
      setBar('ok', fromSession && authorization === `Bearer ${fromSession}` ? 'Signed in with the dashboard\'s token' : 'Token accepted',
        who(authorization), '; the schema is loaded. Changing the Authorization header fetches it again.');
    } else if (status === 401) {
      const message = body && body.errors && body.errors[0] ? body.errors[0].message : 'token rejected';
      if (!authorization) showMissing();
      else setBar('rejected', 'The API rejected the token: ', message, '. Put a valid one under Headers as ', ['code', '{"Authorization": "Bearer <token>"}'], '.');
    } else {
      const message = body && body.errors && body.errors[0] ? body.errors[0].message : `HTTP ${status}`;
      setBar('error', 'The schema could not be loaded: ', message);
    }
  }

  /**
   * A fetcher for `POST /graphql`. GraphiQL passes the headers editor's headers in `opts`; the
   * first introspection can run before the editor exists, so it falls back to the text we track.
   */
  function makeFetcher() {
    return async (params, opts) => {
      const headers = (opts && opts.headers) || parseHeaders(headersText) || {};
      const authorization = authorizationOf(JSON.stringify(headers));
      let res;
      try {
        res = await fetch(ENDPOINT, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { ...headers, 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(params),
        });
      } catch (e) {
        setBar('error', 'The API did not answer: ', String(e && e.message ? e.message : e));
        throw e;
      }
      const body = await res.json().catch(() => null);
      if (params && params.operationName === INTROSPECTION) noteSchemaAnswer(authorization, res.status, body);
      else if (res.status === 401) noteSchemaAnswer(authorization, 401, body);
      if (body === null) throw new Error(`The API answered HTTP ${res.status} without JSON.`);
      return body;
    };
  }

  let fetcher = makeFetcher();
  let refetchTimer = null;

  /** A changed Authorization header: a new fetcher, which makes GraphiQL introspect again. */
  function onEditHeaders(text) {
    headersText = text;
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(() => {
      const authorization = authorizationOf(headersText);
      if (authorization === null || authorization === schemaAuthorization) return;
      schemaAuthorization = authorization;
      setBar('loading', 'Fetching the schema with the new header…');
      fetcher = makeFetcher();
      render();
    }, 400);
  }

  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  function render() {
    root.render(React.createElement(GraphiQL, {
      fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: initialHeaders,
      onEditHeaders,
      // Show the headers editor: that is where the token goes.
      defaultEditorToolsVisibility: 'headers',
      // A token never goes to localStorage.
      shouldPersistHeaders: false,
    }));
  }

  if (fromSession) setBar('loading', 'Using the dashboard\'s token', who(`Bearer ${fromSession}`), '; loading the schema…');
  else showMissing();
  render();
})();
