// The operator view (/console/ops): the edge's live figures from /ops/status, polled every
// OPS_REFRESH_MS. /ops/status is guarded like /metrics: with EDGE_OPS_AUTH and authentication
// on, the token field's credential goes along as `Authorization: Bearer`.
//
// DOM contract: #token, #sessions, #segments-per-s, #p50, #p95, #errors > li[data-kind],
// #replicas > tr[data-replica][data-ready], #ops-message (role=alert, data-code on failure).

import { clearMessage as clearAlert, showMessage as showAlert } from './alert.js';
import { authHeaders, edgeBase } from './protocol.js';

/** How often the figures are fetched. */
export const OPS_REFRESH_MS = 3000;

const BASE = edgeBase(import.meta.url);
const $ = (id) => document.getElementById(id);
const ui = {
  form: $('ops-controls'), token: $('token'), message: $('ops-message'), updated: $('updated'),
  status: $('status'), sessions: $('sessions'), rate: $('segments-per-s'), total: $('segments-total'),
  p50: $('p50'), p95: $('p95'), signals: $('signals'), errors: $('errors'), replicas: $('replicas'),
};

/** The previous answer's clock and segment count, for the rate. */
let previous = null;
let timer = null;

function showMessage(code, text) {
  showAlert(ui.message, code, text);
}

function clearMessage() {
  clearAlert(ui.message);
}

function formatMs(value) {
  return value === null || value === undefined ? '–' : String(Math.round(value));
}

/** Segments per second between the previous answer and this one; null for the first. */
function segmentRate(status) {
  const last = previous;
  previous = { time: status.time_s, total: status.segments_total };
  if (!last || status.time_s <= last.time || status.segments_total < last.total) return null;
  return (status.segments_total - last.total) / (status.time_s - last.time);
}

function renderErrors(errors) {
  const items = Object.entries(errors).map(([kind, count]) => {
    const item = document.createElement('li');
    item.dataset.kind = kind;
    item.dataset.count = String(count);
    item.textContent = `${kind}: ${count}`;
    return item;
  });
  if (!items.length) {
    const none = document.createElement('li');
    none.className = 'none';
    none.textContent = 'none';
    items.push(none);
  }
  ui.errors.replaceChildren(...items);
}

function renderReplicas(replicas) {
  ui.replicas.replaceChildren(...replicas.map((replica) => {
    const row = document.createElement('tr');
    row.dataset.replica = replica.address;
    row.dataset.ready = String(replica.ready);
    const cells = [['address', replica.address], ['ready', replica.ready ? 'ready' : 'not ready'],
      ['in-flight', String(replica.in_flight)], ['calls', String(replica.calls)]];
    for (const [className, text] of cells) {
      const td = document.createElement('td');
      td.className = className;
      td.textContent = text;
      row.append(td);
    }
    return row;
  }));
}

function render(status) {
  const rate = segmentRate(status);
  ui.status.textContent = status.status;
  ui.sessions.textContent = String(status.sessions);
  ui.rate.textContent = rate === null ? '–' : rate.toFixed(2);
  ui.total.textContent = String(status.segments_total);
  ui.p50.textContent = formatMs(status.latency.p50_ms);
  ui.p95.textContent = formatMs(status.latency.p95_ms);
  ui.signals.textContent = status.signals.length ? status.signals.join(', ') : 'none yet';
  renderErrors(status.errors);
  renderReplicas(status.replicas);
  ui.updated.textContent = new Date(status.time_s * 1000).toLocaleTimeString();
}

/** What the page says about an answer that is not a ready edge, or null. */
function problemOf(status) {
  if (status.status === 'draining') {
    return 'The edge is not ready: it is draining (shutting down) and takes no new session.';
  }
  if (status.status !== 'ready') return 'The service is not ready: no Triton replica has the model ready.';
  return null;
}

async function refresh() {
  const token = ui.token.value.trim();
  try {
    const response = await fetch(new URL('ops/status', BASE), { headers: authHeaders(token), cache: 'no-store' });
    if (response.status === 401) {
      showMessage('auth_required', token ? 'Authentication failed: the access token was refused.'
        : 'Authentication is needed: enter an access token to see the figures.');
      return;
    }
    if (!response.ok) {
      showMessage('not_ready', `The edge answered ${response.status} for /ops/status.`);
      return;
    }
    const status = await response.json();
    render(status);
    const problem = problemOf(status);
    if (problem) showMessage('not_ready', problem);
    else clearMessage();
  } catch {
    showMessage('not_ready', 'The edge cannot be reached.');
  }
}

/** Refresh now, then every OPS_REFRESH_MS after each answer (never two requests at once). */
async function poll() {
  clearTimeout(timer);
  timer = null;
  await refresh();
  if (timer === null) timer = setTimeout(poll, OPS_REFRESH_MS);
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  previous = null; // another credential may see another edge's figures: no rate across it
  poll();
});
ui.token.addEventListener('change', () => {
  previous = null;
  poll();
});
$('refresh-interval').textContent = String(OPS_REFRESH_MS / 1000);
poll();
