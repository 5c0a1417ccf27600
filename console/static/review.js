// The review page (/console/review): the incident queue by severity, the selected incident's clip
// and transcript with its harmful words marked, confirm or dismiss by keyboard, and the speaker's
// history beside it. Everything comes from the review API (docs/INCIDENTS.md) with the token
// field's credential as `Authorization: Bearer`; the clip is fetched the same way and played from
// a blob: URL (an <audio src> cannot send that header).
//
// DOM contract: #token, #status, #min-severity, #speaker, #queue > tr.incident[data-id]
// [data-status][aria-selected], #transcript mark.harmful, #clip (data-played once its time advanced),
// #decision, #speaker-confirmed, #speaker-dismissed, #speaker-incidents, #review-message
// (role=alert, data-code on failure). Query parameters status, min_severity and speaker_id fill
// the filters, so a link can open a speaker's queue.

import { clearMessage as clearAlert, showMessage as showAlert } from './alert.js';
import { authHeaders, edgeBase, highlightParts } from './protocol.js';

/** Incidents one queue load shows (the API's page maximum). */
const QUEUE_LIMIT = 100;

const BASE = edgeBase(import.meta.url);
const $ = (id) => document.getElementById(id);
const ui = {
  form: $('review-controls'), token: $('token'), status: $('status'), minSeverity: $('min-severity'),
  speaker: $('speaker'), message: $('review-message'), queue: $('queue'), total: $('queue-total'),
  incident: $('incident'), transcript: $('transcript'), clip: $('clip'), severity: $('severity'),
  categories: $('categories'), reasons: $('reasons'), streamTime: $('stream-time'), origin: $('origin'),
  decision: $('decision'), confirm: $('confirm'), dismiss: $('dismiss'), speakerId: $('speaker-id'),
  speakerIncidents: $('speaker-incidents'), speakerOpen: $('speaker-open'),
  speakerConfirmed: $('speaker-confirmed'), speakerDismissed: $('speaker-dismissed'), speakerDays: $('speaker-days'),
};

/** The loaded queue and the selected incident's index in it. */
const state = { incidents: [], selected: -1, clipUrl: null, busy: false };

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A review API call; its JSON (the response itself with `raw`), or an ApiError with the edge's
 *  typed code. */
async function api(path, { raw = false, headers = {}, ...options } = {}) {
  const response = await fetch(new URL(path, BASE), {
    ...options, headers: { ...authHeaders(ui.token.value.trim()), ...headers },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const detail = body.detail || {};
    throw new ApiError(response.status, detail.code || `http_${response.status}`, detail.message || response.statusText);
  }
  return raw ? response : response.json();
}

function showError(error) {
  showAlert(ui.message, error.code || 'network', error.code ? `${error.code}: ${error.message}` : String(error));
}

function queueQuery() {
  const query = new URLSearchParams({ sort: 'severity', limit: String(QUEUE_LIMIT) });
  if (ui.status.value) query.set('status', ui.status.value);
  const minimum = Number(ui.minSeverity.value);
  if (minimum > 0) query.set('min_severity', String(minimum));
  if (ui.speaker.value.trim()) query.set('speaker_id', ui.speaker.value.trim());
  return query;
}

function when(incident) {
  return new Date(incident.created_at).toLocaleString();
}

/** The transcript as text and <mark class="harmful"> nodes over its lexicon spans (the
 *  classifier's span is the whole segment: marking all of it would say nothing). */
function markedText(incident) {
  const parts = highlightParts(incident.text, incident.spans.filter((s) => s.source !== 'classifier'));
  return parts.map((part) => {
    if (!part.harmful) return document.createTextNode(part.text);
    const mark = document.createElement('mark');
    mark.className = 'harmful';
    mark.textContent = part.text;
    return mark;
  });
}

function queueRow(incident, index) {
  const row = document.createElement('tr');
  row.className = 'incident';
  row.dataset.id = incident.id;
  row.dataset.status = incident.status;
  row.setAttribute('aria-selected', 'false');
  const cells = [incident.severity.toFixed(2), when(incident), incident.speaker_id || '–', markedText(incident),
    incident.status];
  row.append(...cells.map((content) => {
    const td = document.createElement('td');
    if (typeof content === 'string') td.textContent = content;
    else td.append(...content);
    return td;
  }));
  row.addEventListener('click', () => select(index));
  return row;
}

async function loadQueue() {
  clearAlert(ui.message);
  try {
    const page = await api(`v1/incidents?${queueQuery()}`);
    state.incidents = page.incidents;
    ui.queue.replaceChildren(...page.incidents.map(queueRow));
    ui.total.textContent = `(${page.incidents.length} of ${page.total})`;
    await select(page.incidents.length ? 0 : -1);
  } catch (error) {
    showError(error);
  }
}

function renderIncident(incident) {
  ui.transcript.replaceChildren(...markedText(incident));
  ui.severity.textContent = incident.severity.toFixed(2);
  ui.categories.textContent = [...incident.categories, incident.category && `→ ${incident.category}`]
    .filter(Boolean).join(', ') || '–';
  ui.reasons.textContent = incident.reasons.join(', ') || '–';
  ui.streamTime.textContent = `${incident.start_s.toFixed(1)}–${incident.end_s.toFixed(1)} s`;
  ui.origin.textContent = incident.source === 'job' ? `job ${incident.job_id}` : `session ${incident.session_id}`;
  ui.decision.textContent = incident.decided_by
    ? `${incident.status} by ${incident.decided_by}${incident.note ? `: ${incident.note}` : ''}` : incident.status;
  ui.decision.dataset.status = incident.status;
}

async function loadClip(incident) {
  if (state.clipUrl) URL.revokeObjectURL(state.clipUrl);
  state.clipUrl = null;
  ui.clip.removeAttribute('src');
  delete ui.clip.dataset.played;
  if (incident.clip_start_s === null) return;
  const response = await api(`v1/incidents/${incident.id}/clip`, { raw: true });
  state.clipUrl = URL.createObjectURL(await response.blob());
  ui.clip.src = state.clipUrl;
}

function renderSpeaker(history) {
  ui.speakerId.textContent = history ? history.speaker_id : '–';
  const counts = [[ui.speakerIncidents, 'incidents'], [ui.speakerOpen, 'open'], [ui.speakerConfirmed, 'confirmed'],
    [ui.speakerDismissed, 'dismissed']];
  for (const [element, key] of counts) element.textContent = history ? String(history[key]) : '–';
  ui.speakerDays.replaceChildren(...(history ? history.by_day : []).map((day) => {
    const item = document.createElement('li');
    item.textContent = `${day.day}: ${day.incidents} incidents, ${day.confirmed} confirmed`;
    return item;
  }));
}

async function loadSpeaker(incident) {
  renderSpeaker(incident.speaker_id ? await api(`v1/speakers/${encodeURIComponent(incident.speaker_id)}`) : null);
}

async function select(index) {
  if (state.selected >= 0 && ui.queue.rows[state.selected]) {
    ui.queue.rows[state.selected].setAttribute('aria-selected', 'false');
  }
  state.selected = index;
  ui.incident.hidden = index < 0;
  if (index < 0) return;
  const incident = state.incidents[index];
  const row = ui.queue.rows[index];
  row.setAttribute('aria-selected', 'true');
  row.scrollIntoView({ block: 'nearest' });
  renderIncident(incident);
  try {
    await Promise.all([loadClip(incident), loadSpeaker(incident)]);
  } catch (error) {
    showError(error);
  }
}

/** The next open incident after `from`, wrapping around; -1 when none is open. */
function nextOpen(incidents, from) {
  for (let step = 1; step <= incidents.length; step += 1) {
    const index = (from + step) % incidents.length;
    if (incidents[index].status === 'open') return index;
  }
  return -1;
}

async function decide(decision) {
  const incident = state.incidents[state.selected];
  if (!incident || state.busy) return;
  state.busy = true;
  clearAlert(ui.message);
  try {
    const decided = await api(`v1/incidents/${incident.id}/decision`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ decision }),
    });
    state.incidents[state.selected] = decided;
    const row = ui.queue.rows[state.selected];
    row.dataset.status = decided.status;
    row.cells[4].textContent = decided.status;
    const next = nextOpen(state.incidents, state.selected);
    if (next >= 0) await select(next);
    else {
      renderIncident(decided);
      await loadSpeaker(decided);
    }
  } catch (error) {
    showError(error);
  } finally {
    state.busy = false;
  }
}

function togglePlay() {
  if (!ui.clip.src) return;
  if (ui.clip.paused) ui.clip.play().catch(showError);
  else ui.clip.pause();
}

const KEYS = {
  j: () => state.incidents.length && select(Math.min(state.incidents.length - 1, state.selected + 1)),
  ArrowDown: () => KEYS.j(),
  k: () => state.incidents.length && select(Math.max(0, state.selected - 1)),
  ArrowUp: () => KEYS.k(),
  p: togglePlay,
  c: () => decide('confirm'),
  d: () => decide('dismiss'),
  r: loadQueue,
};

function onKey(event) {
  const typing = ['INPUT', 'SELECT', 'TEXTAREA'].includes(event.target.tagName);
  if (typing || event.altKey || event.ctrlKey || event.metaKey || !(event.key in KEYS)) return;
  event.preventDefault();
  KEYS[event.key]();
}

function fillFromQuery() {
  const query = new URLSearchParams(window.location.search);
  if (query.has('status')) ui.status.value = query.get('status');
  if (query.has('min_severity')) ui.minSeverity.value = query.get('min_severity');
  if (query.has('speaker_id')) ui.speaker.value = query.get('speaker_id');
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  // Leave the field so that the keys act on the queue at once.
  document.activeElement.blur();
  loadQueue();
});
ui.confirm.addEventListener('click', () => decide('confirm'));
ui.dismiss.addEventListener('click', () => decide('dismiss'));
ui.clip.addEventListener('timeupdate', () => {
  if (ui.clip.currentTime > 0) ui.clip.dataset.played = 'true';
});
document.addEventListener('keydown', onKey);
fillFromQuery();
