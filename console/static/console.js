// The live console (/console): capture the microphone or a tab's audio, stream it to /ws/audio
// as 16 kHz mono PCM16 in 20 ms frames, and show each segment's result as it comes. The
// protocol is docs/PROTOCOL.md; its frames and the reconnection policy are in protocol.js.
//
// DOM contract (the browser tests rely on these ids, classes and attributes):
//   #state text: idle | connecting | live | reconnecting | closed
//   #message role=alert, data-code on failure (not_ready, auth_required, permission_denied,
//     no_device, bad_language, server_error, or the server's error code), empty when fine
//   #segments > tr.segment[data-seq][data-harmful] > td.time td.text td.verdict td.confidence
//     td.latency, harmful words as <mark class="harmful">
//   #segments > tr.interim[data-start][data-end][data-confirmed] (an interim flag, before its
//     segment's row; data-confirmed "pending", then "true" or "false" once its final came)
//   #meter (data-level 0..1), #p50, #p95 (ms), #reconnects, #summary (hidden until a summary)

import { clearMessage as clearAlert, showMessage as showAlert } from './alert.js';
import { LevelMeter } from './level.js';
import {
  AudioLedger,
  CAPTURE_PROCESSOR,
  CLOSE_REASONS,
  END_FRAME,
  NORMAL_CLOSURE,
  RECONNECT_ERRORS,
  RECONNECT_MAX_ATTEMPTS,
  SAMPLE_RATE,
  authHeaders,
  backoffDelayS,
  bleepIntervals,
  configFrame,
  edgeBase,
  endsStream,
  formatStreamTime,
  highlightParts,
  isBadLanguage,
  messageCode,
  notYetBleeped,
  parseEvent,
  percentile,
  resumeSample,
  shouldReconnect,
  socketUrl,
} from './protocol.js';

const BASE = edgeBase(import.meta.url);
const WORKLET_URL = new URL('./capture-worklet.js', import.meta.url);

/** Audio kept for sending again after a reconnection (§7); older audio is dropped. */
const MAX_KEPT_AUDIO_S = 60;
/** How long Stop waits for the worklet's last frame before sending `end` anyway. */
const FLUSH_TIMEOUT_MS = 500;
/** Capture as the microphone gives it: echo cancellation, noise suppression and gain control
 *  change the speech the model hears (and garble a test's fake capture file). */
const MIC_CONSTRAINTS = { channelCount: { ideal: 1 }, echoCancellation: false, noiseSuppression: false,
  autoGainControl: false };
const TAB_AUDIO_CONSTRAINTS = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
/** The bleep: moderation/bleep.py's 1 kHz tone, at a level that does not startle through headphones. */
const BLEEP_FREQUENCY_HZ = 1000;
const BLEEP_LEVEL = 0.2;
/** Longest playback delay offered (the DelayNode's buffer is allocated for it). */
const MAX_BLEEP_DELAY_S = 30;
const STATES = ['idle', 'connecting', 'live', 'reconnecting', 'closed'];
const SUMMARY_FIELDS = ['session_id', 'segments', 'harmful_segments', 'failed_segments', 'audio_seconds',
  'p50_latency_ms', 'p95_latency_ms'];

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('controls'), source: $('source'), language: $('language'), words: $('word-timestamps'),
  token: $('token'), start: $('start'), stop: $('stop'), bleep: $('bleep'), bleepDelay: $('bleep-delay'),
  interim: $('interim'),
  bleepStatus: $('bleep-status'), state: $('state'), note: $('connection-note'), message: $('message'),
  reconnects: $('reconnects'), p50: $('p50'), p95: $('p95'), segments: $('segments'), summary: $('summary'),
  summaryStream: $('summary-stream'),
};
const meter = new LevelMeter($('meter'));

/** A failure the page explains: `code` becomes #message's data-code. */
class PageError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A language asked for in the page's address (?language=xx) that the list does not offer: it
 *  is sent as it is, so that the edge's own answer (bad_config) is what the user sees. */
let languageOverride = null;
/** The stream being captured and sent, or null. */
let run = null;
/** The Start being prepared (capture, readiness, graph), or null: Stop cancels it. */
let starting = null;
const CANCELLED = new Error('cancelled by Stop');

// ---- page state -------------------------------------------------------------------------------

function setState(state, note = '') {
  if (!STATES.includes(state)) throw new Error(`unknown state ${state}`);
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  ui.note.textContent = note;
}

function showMessage(code, text) {
  showAlert(ui.message, code, text);
}

function clearMessage() {
  clearAlert(ui.message);
}

/** Controls a session fixes (its config) are locked while it runs; the bleep toggle is not. */
function setRunning(running) {
  for (const control of [ui.source, ui.language, ui.words, ui.interim, ui.token, ui.bleepDelay]) {
    control.disabled = running;
  }
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  if (running) ui.stop.focus();
  else if (document.activeElement === ui.stop || document.activeElement === document.body) ui.start.focus();
}

// ---- readiness and languages ------------------------------------------------------------------

/** /readyz as the page's user can read it: null when ready, else the PageError to show. */
async function readinessProblem(token) {
  let response;
  try {
    response = await fetch(new URL('readyz', BASE), { headers: authHeaders(token), cache: 'no-store' });
  } catch {
    return new PageError('not_ready', 'The service is not reachable: the edge does not answer. Try again later.');
  }
  if (response.status === 401) {
    return new PageError('auth_required', token
      ? 'Authentication failed: the access token was refused. Check it and try again.'
      : 'Authentication is needed: enter an access token (an API key or a JWT) and try again.');
  }
  if (response.ok) return null;
  const body = await response.json().catch(() => ({}));
  return new PageError('not_ready', body.status === 'draining'
    ? 'The service is not ready: this edge is shutting down. Try again in a moment.'
    : 'The service is not ready: no moderation server has its model ready yet. Try again in a moment.');
}

/** Check readiness and show the outcome (on load, and when the token changes). */
async function showReadiness() {
  const problem = await readinessProblem(ui.token.value.trim());
  if (run) return; // a session started meanwhile: its own messages count
  if (problem) showMessage(problem.code, problem.message);
  else if (['not_ready', 'auth_required'].includes(ui.message.dataset.code)) clearMessage();
}

function languageName(code, names) {
  try {
    const name = names && names.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

/** The language options, from the edge's list (moderation.protocol.WHISPER_LANGUAGES). */
async function loadLanguages() {
  let body = { languages: [], default: null };
  try {
    const response = await fetch(new URL('console/languages.json', BASE), { cache: 'no-store' });
    if (response.ok) body = await response.json();
  } catch {
    // The readiness check reports an unreachable edge; the server default stays selectable.
  }
  const names = typeof Intl.DisplayNames === 'function' ? new Intl.DisplayNames(['en'], { type: 'language' }) : null;
  const options = body.languages.map((code) => new Option(languageName(code, names), code));
  options.sort((a, b) => a.text.localeCompare(b.text));
  ui.language.append(...options);
  showDefaultLanguage(body.default);
  applyLanguageParameter(body.languages);
}

function showDefaultLanguage(code) {
  ui.language.options[0].text = code ? `Server default (${code})` : 'Server default';
}

function applyLanguageParameter(known) {
  const requested = new URLSearchParams(window.location.search).get('language');
  if (requested === null) return;
  if (requested === '' || known.includes(requested)) {
    ui.language.value = requested;
  } else {
    languageOverride = requested;
    ui.language.setAttribute('aria-describedby', 'language-note');
    const note = document.createElement('small');
    note.id = 'language-note';
    note.textContent = `Language “${requested}” from the page address.`;
    ui.language.after(note);
  }
}

function chosenLanguage() {
  return languageOverride ?? ui.language.value;
}

// ---- capture -----------------------------------------------------------------------------------

function captureError(error, source) {
  const what = source === 'tab' ? 'the tab or screen' : 'the microphone';
  switch (error && error.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return new PageError('permission_denied', source === 'tab'
        ? 'Sharing was cancelled or denied: press Start, choose a tab and tick “Share tab audio”.'
        : 'Microphone access was denied: allow it for this site (the icon in the address bar) and press Start again.');
    case 'NotFoundError':
    case 'OverconstrainedError':
      return new PageError('no_device', 'No audio input device was found: connect a microphone and press Start again.');
    case 'NotReadableError':
    case 'AbortError':
      return new PageError('no_device', `Could not open ${what}: another application may be using it.`);
    default:
      return new PageError('no_device', `Could not capture ${what}: ${error && error.message ? error.message : error}`);
  }
}

/** The MediaStream to moderate; PageError when the browser gives none. */
async function openCapture(source) {
  const devices = navigator.mediaDevices;
  if (!devices) {
    throw new PageError('permission_denied', 'This page cannot capture audio: open it over https:// (or on localhost).');
  }
  if (source === 'tab' && typeof devices.getDisplayMedia !== 'function') {
    throw new PageError('no_device', 'This browser cannot capture a tab’s audio: use the microphone.');
  }
  let stream;
  try {
    stream = source === 'tab'
      // Chromium shares audio only together with video; the video track is left unused.
      ? await devices.getDisplayMedia({ video: true, audio: TAB_AUDIO_CONSTRAINTS })
      : await devices.getUserMedia({ audio: MIC_CONSTRAINTS, video: false });
  } catch (error) {
    throw captureError(error, source);
  }
  if (!stream.getAudioTracks().length) {
    stopTracks(stream);
    throw new PageError('no_device', 'The shared tab or screen has no audio: share again and tick “Share tab audio”.');
  }
  return stream;
}

function openAudioContext() {
  try {
    return new AudioContext({ latencyHint: 'interactive' });
  } catch (error) {
    throw new PageError('no_device', `This browser cannot process audio here: ${error.message}`);
  }
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

/**
 * The audio graph: capture -> worklet (16 kHz PCM16 frames to the page; its silent output keeps
 * it rendered), and capture -> delay -> voice gain -> output with a 1 kHz tone beside it, the
 * bleep playback, heard only while #bleep is ticked.
 */
async function buildGraph(context, stream, delayS) {
  await context.audioWorklet.addModule(WORKLET_URL);
  const source = context.createMediaStreamSource(stream);
  const worklet = new AudioWorkletNode(context, CAPTURE_PROCESSOR, { numberOfInputs: 1, numberOfOutputs: 1,
    outputChannelCount: [1] });
  source.connect(worklet).connect(context.destination);

  const delay = context.createDelay(MAX_BLEEP_DELAY_S);
  delay.delayTime.value = delayS;
  const voice = context.createGain();
  const tone = context.createOscillator();
  tone.frequency.value = BLEEP_FREQUENCY_HZ;
  const beep = context.createGain();
  beep.gain.value = 0;
  const output = context.createGain();
  output.gain.value = ui.bleep.checked ? 1 : 0;
  source.connect(delay).connect(voice).connect(output).connect(context.destination);
  tone.connect(beep).connect(output);
  tone.start();
  return { source, worklet, voice, beep, output, tone, delayS };
}

// ---- the stream --------------------------------------------------------------------------------

/** Start button (the form's submit): capture, check readiness, build the graph, connect. */
async function start(event) {
  event.preventDefault();
  if (run || starting) return;
  const attempt = { cancelled: false };
  starting = attempt;
  clearMessage();
  resetResults();
  setRunning(true);
  setState('connecting');
  const current = await prepare(attempt);
  starting = null;
  if (attempt.cancelled || !current) {
    setRunning(false);
    setState('idle');
    return;
  }
  run = current;
  connect(run, 0);
}

/** Capture, readiness and the audio graph, or null after showing why not. */
async function prepare(attempt) {
  const source = ui.source.value;
  const token = ui.token.value.trim();
  const delayS = Math.min(MAX_BLEEP_DELAY_S, Math.max(0, Number(ui.bleepDelay.value) || 0));
  let context = null;
  let stream = null;
  try {
    // Both asked for inside the click, before anything is awaited: browsers start audio only on
    // a user gesture, and getDisplayMedia needs one too.
    context = openAudioContext();
    const resumed = context.resume();
    resumed.catch(() => {}); // awaited below, unless something else fails first
    const [captured, problem] = await Promise.allSettled([openCapture(source), readinessProblem(token)]);
    stream = captured.status === 'fulfilled' ? captured.value : null;
    if (attempt.cancelled) throw CANCELLED;
    if (problem.value) throw problem.value;
    if (!stream) throw captured.reason;
    await resumed;
    const graph = await buildGraph(context, stream, delayS);
    if (attempt.cancelled) throw CANCELLED;
    return newRun({ context, stream, graph, token, source });
  } catch (error) {
    if (stream) stopTracks(stream);
    if (context) context.close();
    if (error !== CANCELLED) {
      const failure = error instanceof PageError ? error
        : new PageError('server_error', `The console could not set up its audio processing: ${error}`);
      showMessage(failure.code, failure.message);
    }
    return null;
  }
}

function newRun({ context, stream, graph, token, source }) {
  const current = {
    context, stream, graph, token, source,
    options: { language: chosenLanguage(), wordTimestamps: ui.words.checked, interim: ui.interim.checked },
    ledger: new AudioLedger(MAX_KEPT_AUDIO_S * SAMPLE_RATE),
    sessions: [], session: null, failed: 0, reconnects: 0, timer: null,
    captureStart: null, stopping: false, finished: false, onFinalFrame: null, lastServerError: null,
    latencies: [], lateBleeps: 0, bleeped: [],
  };
  graph.worklet.port.onmessage = (message) => onWorkletMessage(current, message.data);
  for (const track of stream.getAudioTracks()) {
    track.addEventListener('ended', () => onTrackEnded(current));
  }
  return current;
}

function onWorkletMessage(current, data) {
  if (current.finished) return;
  if (data.type === 'started') {
    current.captureStart = data.contextTime;
  } else if (data.type === 'frame') {
    if (data.pcm.byteLength) {
      current.ledger.add(data.pcm);
      meter.update(data.pcm);
      sendLive(current);
    }
    if (data.final && current.onFinalFrame) current.onFinalFrame();
  }
}

/** Send what was captured since the last send, while the session takes audio. */
function sendLive(current) {
  const session = current.session;
  if (!session || !session.configured || session.ending || session.ws.readyState !== WebSocket.OPEN) return;
  const { frames } = current.ledger.since(session.sentUpTo);
  for (const pcm of frames) session.ws.send(pcm);
  session.sentUpTo = current.ledger.end;
}

/** Open a session whose audio begins at stream sample `startSample`. */
function connect(current, startSample) {
  const session = { index: current.sessions.length, ws: null, startSample, sentUpTo: startSample, opened: false,
    gotReady: false, configured: false, ending: false, summary: null };
  current.sessions.push(session);
  current.session = session;
  try {
    session.ws = new WebSocket(socketUrl(BASE, current.token));
  } catch (error) {
    finish(current, new PageError('server_error', `Cannot open the WebSocket: ${error.message}`));
    return;
  }
  session.ws.binaryType = 'arraybuffer';
  session.ws.onopen = () => {
    session.opened = true;
    // A new session starts from the server's defaults: the config goes first, every time (§7).
    session.ws.send(configFrame(current.options));
  };
  session.ws.onmessage = (message) => {
    if (typeof message.data !== 'string') return;
    let event;
    try {
      event = parseEvent(message.data);
    } catch (error) {
      console.warn('passed over a frame that is not a server event', error);
      return;
    }
    onEvent(current, session, event);
  };
  session.ws.onclose = (close) => onClose(current, session, close.code);
}

function onEvent(current, session, event) {
  if (current.finished || session !== current.session) return;
  switch (event.type) {
    case 'ready':
      session.gotReady = true;
      showDefaultLanguage(event.language);
      break;
    case 'config':
      onConfigured(current, session);
      break;
    case 'segment':
      addSegment(current, session, event);
      break;
    case 'interim':
      addInterim(current, session, event);
      break;
    case 'error':
      onError(current, session, event);
      break;
    case 'summary':
      session.summary = event;
      break;
    default:
      break;
  }
}

/** The config was accepted: the session is live; send the backlog, then the live audio. */
function onConfigured(current, session) {
  session.configured = true;
  const { start } = current.ledger.since(session.startSample);
  session.startSample = start; // later only when that audio was no longer kept
  session.sentUpTo = start;
  setState('live');
  sendLive(current);
  if (current.stopping) sendEnd(current); // Stop was pressed while connecting
}

function onError(current, session, event) {
  if (event.seq !== undefined && event.seq !== null) {
    addFailedSegment(current, session, event);
  } else if (RECONNECT_ERRORS.has(event.code)) {
    current.lastServerError = event; // close 1012/1013 follows: the reconnection says the rest
  } else if (endsStream(event)) {
    // The audio would be moderated under settings the user did not choose: stop here.
    const text = isBadLanguage(event)
      ? `Unknown language “${current.options.language}”: the service answered: ${event.message}. Choose one from the list.`
      : `The service refused the settings: ${event.message}`;
    finish(current, new PageError(messageCode(event), text));
  } else {
    showMessage(messageCode(event), `${event.message} (${event.code})`);
  }
}

function onClose(current, session, code) {
  if (current.finished || session !== current.session) return;
  if (current.stopping && session.ending) {
    finish(current, code === NORMAL_CLOSURE ? null
      : new PageError('server_error', `The session ended abnormally (${describeClose(code)}).`));
    return;
  }
  if (!session.opened && current.sessions.length === 1) {
    refused(current);
    return;
  }
  current.failed = session.gotReady ? 0 : current.failed + 1;
  const retry = shouldReconnect(code) || (!session.opened && current.sessions.length > 1);
  if (retry && !current.stopping && current.failed < RECONNECT_MAX_ATTEMPTS) {
    reconnect(current, session, code);
  } else if (retry && !current.stopping) {
    const last = current.lastServerError;
    finish(current, new PageError(last ? last.code : 'server_error',
      `Gave up after ${current.failed} attempts in a row: the service stays busy or unavailable (${describeClose(code)}).`));
  } else {
    finish(current, closeProblem(current, code));
  }
}

/** A close that is no reconnection: what to tell the user, if anything (a timeout's own error
 *  event is already shown). */
function closeProblem(current, code) {
  if (current.stopping || code === NORMAL_CLOSURE) return null;
  if (code === 1008 && ui.message.dataset.code) return null;
  return new PageError('server_error', `The connection to the service ended (${describeClose(code)}).`);
}

function describeClose(code) {
  return CLOSE_REASONS[code] ? `${code}, ${CLOSE_REASONS[code]}` : `${code}`;
}

/** The first handshake failed: a browser sees only 1006, so ask /readyz why. */
async function refused(current) {
  const problem = await readinessProblem(current.token);
  finish(current, problem || new PageError('auth_required', current.token
    ? 'The service refused the connection: the access token was not accepted, or this page’s origin is not allowed (EDGE_ALLOWED_ORIGINS).'
    : 'The service refused the connection: it needs an access token, or this page’s origin is not allowed (EDGE_ALLOWED_ORIGINS).'));
}

/** Wait (exponential backoff with jitter, as edge/client.py) and go on in a new session from
 *  where the edge stopped reading. */
function reconnect(current, session, code) {
  const resume = resumeSample({ sessionStart: session.startSample, sentUpTo: session.sentUpTo,
    gotReady: session.gotReady, summaryAudioSeconds: session.summary ? session.summary.audio_seconds : null });
  const delayS = backoffDelayS(current.failed + 1);
  current.reconnects += 1;
  ui.reconnects.textContent = String(current.reconnects);
  setState('reconnecting', `${describeClose(code)}: reconnecting in ${delayS.toFixed(1)} s, attempt ${current.failed + 1} `
    + `of ${RECONNECT_MAX_ATTEMPTS}`);
  current.timer = setTimeout(() => {
    current.timer = null;
    if (!current.finished) connect(current, resume);
  }, delayS * 1000);
}

/** Stop button: flush the capture, send `end`, and wait for the summary and the close. */
async function stop() {
  if (starting) {
    starting.cancelled = true;
    return;
  }
  const current = run;
  if (!current || current.stopping) return;
  current.stopping = true;
  ui.stop.disabled = true;
  if (current.timer !== null) {
    clearTimeout(current.timer);
    finish(current, null);
    return;
  }
  const session = current.session;
  if (!session || !session.opened) {
    if (session) session.ws.close();
    finish(current, null);
    return;
  }
  await flushCapture(current);
  stopTracks(current.stream);
  if (session.configured) sendEnd(current);
  // else: sent once the config is acknowledged (onConfigured)
}

function flushCapture(current) {
  return new Promise((resolve) => {
    current.onFinalFrame = resolve;
    current.graph.worklet.port.postMessage({ type: 'flush' });
    setTimeout(resolve, FLUSH_TIMEOUT_MS);
  });
}

function sendEnd(current) {
  const session = current.session;
  if (session.ending || session.ws.readyState !== WebSocket.OPEN) return;
  sendLive(current);
  session.ending = true;
  session.ws.send(END_FRAME);
  setState('live', 'finishing: waiting for the last results and the summary');
}

/** The capture ended by itself: sharing stopped, or the device went away. */
function onTrackEnded(current) {
  if (current.finished || current.stopping) return;
  if (current.source === 'mic') showMessage('no_device', 'The microphone stopped (unplugged or taken away).');
  stop();
}

/** The stream is over: release the capture, show the summary and any problem. */
function finish(current, problem) {
  if (current.finished) return;
  current.finished = true;
  if (current.timer !== null) clearTimeout(current.timer);
  const session = current.session;
  if (session && session.ws && session.ws.readyState <= WebSocket.OPEN) session.ws.close(NORMAL_CLOSURE);
  stopTracks(current.stream);
  releaseAudio(current);
  if (run === current) run = null;
  meter.reset();
  if (problem) showMessage(problem.code, problem.message);
  if (session && session.summary) showSummary(current, session.summary);
  setRunning(false);
  setState('closed');
}

/** Close the audio context, after the delayed playback has played out when it is heard. */
function releaseAudio(current) {
  const { graph, context } = current;
  graph.worklet.port.onmessage = null;
  graph.source.disconnect();
  const playingOutS = ui.bleep.checked ? graph.delayS : 0;
  setTimeout(() => context.close(), playingOutS * 1000);
}

// ---- results -----------------------------------------------------------------------------------

function resetResults() {
  ui.segments.replaceChildren();
  ui.summary.hidden = true;
  ui.summaryStream.hidden = true;
  ui.reconnects.textContent = '0';
  ui.p50.textContent = '–';
  ui.p95.textContent = '–';
  ui.bleepStatus.textContent = '';
}

function cell(className, text = '') {
  const td = document.createElement('td');
  td.className = className;
  td.textContent = text;
  return td;
}

function textCell(event) {
  const td = cell('text');
  for (const part of highlightParts(event.text, event.harmful_spans, event.words)) {
    if (part.harmful) {
      const mark = document.createElement('mark');
      mark.className = 'harmful';
      mark.textContent = part.text;
      td.append(mark);
    } else {
      td.append(part.text);
    }
  }
  return td;
}

/** A row of #segments; times in the stream, which the session started at `offsetS` of. */
function segmentRow(session, event, offsetS) {
  const row = document.createElement('tr');
  row.className = 'segment';
  row.dataset.seq = String(event.seq);
  row.dataset.session = String(session.index);
  row.dataset.start = (offsetS + event.start_s).toFixed(3);
  row.dataset.end = (offsetS + event.end_s).toFixed(3);
  row.append(cell('time', `${formatStreamTime(offsetS + event.start_s)}–${formatStreamTime(offsetS + event.end_s)}`));
  return row;
}

function addSegment(current, session, event) {
  const offsetS = session.startSample / SAMPLE_RATE;
  const row = segmentRow(session, event, offsetS);
  row.dataset.harmful = String(Boolean(event.is_harmful));
  const verdict = event.is_harmful ? `harmful (${event.reasons.join(', ')})` : 'ok';
  const confidence = event.confidence === null || event.confidence === undefined ? '–' : event.confidence.toFixed(2);
  row.append(textCell(event), cell('verdict', verdict), cell('confidence', confidence),
    cell('latency', `${Math.round(event.latency_ms)} ms`));
  ui.segments.append(row);
  current.latencies.push(event.latency_ms);
  ui.p50.textContent = String(Math.round(percentile(current.latencies, 50)));
  ui.p95.textContent = String(Math.round(percentile(current.latencies, 95)));
  if (event.unconfirmed_interim) settleInterims(session, event, offsetS);
  if (event.harmful_spans.length) scheduleBleeps(current, event.harmful_spans, offsetS);
}

/** An interim flag: harmful words heard while their segment is still open; bleeped at once. */
function addInterim(current, session, event) {
  const offsetS = session.startSample / SAMPLE_RATE;
  for (const span of event.harmful_spans) {
    const row = document.createElement('tr');
    row.className = 'interim';
    row.dataset.session = String(session.index);
    row.dataset.start = (offsetS + span.start_s).toFixed(3);
    row.dataset.end = (offsetS + span.end_s).toFixed(3);
    row.dataset.confirmed = 'pending';
    row.append(cell('time', `${formatStreamTime(offsetS + span.start_s)}–${formatStreamTime(offsetS + span.end_s)}`),
      textCell({ text: span.text, harmful_spans: [span] }), cell('verdict', `flagged early (${span.category})`),
      cell('confidence', '–'), cell('latency', `${Math.round(event.latency_ms)} ms`));
    ui.segments.append(row);
  }
  scheduleBleeps(current, event.harmful_spans, offsetS);
}

/** A final came: its interim flags are confirmed, but those it lists as unconfirmed. */
function settleInterims(session, event, offsetS) {
  const unconfirmed = new Set(event.unconfirmed_interim.map((s) => (offsetS + s.start_s).toFixed(3)));
  const selector = `tr.interim[data-session="${session.index}"][data-confirmed="pending"]`;
  for (const row of ui.segments.querySelectorAll(selector)) {
    const middle = (Number(row.dataset.start) + Number(row.dataset.end)) / 2;
    if (middle >= offsetS + event.end_s) continue; // after this segment's end: a later one's
    row.dataset.confirmed = unconfirmed.has(row.dataset.start) ? 'false' : 'true';
    if (row.dataset.confirmed === 'false') row.querySelector('td.verdict').textContent += ', not confirmed';
  }
}

/** An error event in a segment's place: the row says the segment could not be moderated. */
function addFailedSegment(current, session, event) {
  const offsetS = session.startSample / SAMPLE_RATE;
  const row = segmentRow(session, { ...event, start_s: event.start_s ?? 0, end_s: event.end_s ?? 0 }, offsetS);
  row.classList.add('failed');
  row.dataset.harmful = 'false';
  row.dataset.code = event.code;
  const latency = event.latency_ms === undefined ? '–' : `${Math.round(event.latency_ms)} ms`;
  row.append(cell('text', event.message), cell('verdict', `error: ${event.code}`), cell('confidence', '–'),
    cell('latency', latency));
  ui.segments.append(row);
}

/** Duck the delayed playback and sound the tone over each span, at the context time its audio
 *  plays: capture time of stream second 0, plus the stream time, plus the delay. */
function scheduleBleeps(current, spans, offsetS) {
  const { context, graph, captureStart } = current;
  if (captureStart === null || context.state === 'closed') return;
  const intervals = notYetBleeped(bleepIntervals(spans, offsetS), current.bleeped);
  current.bleeped.push(...intervals);
  for (const [startS, endS] of intervals) {
    const from = captureStart + startS + graph.delayS;
    const to = captureStart + endS + graph.delayS;
    const now = context.currentTime;
    if (from < now) current.lateBleeps += 1;
    if (to <= now) continue;
    const at = Math.max(from, now);
    graph.voice.gain.setValueAtTime(0, at);
    graph.voice.gain.setValueAtTime(1, to);
    graph.beep.gain.setValueAtTime(BLEEP_LEVEL, at);
    graph.beep.gain.setValueAtTime(0, to);
  }
  if (current.lateBleeps) {
    ui.bleepStatus.textContent = `${current.lateBleeps} span(s) came after their playback: raise the delay.`;
  }
}

function showSummary(current, summary) {
  for (const field of SUMMARY_FIELDS) {
    const value = summary[field];
    ui.summary.querySelector(`[data-field="${field}"]`).textContent = value === null || value === undefined ? '–'
      : String(value);
  }
  const sessions = current.sessions.filter((s) => s.gotReady).length;
  ui.summaryStream.hidden = sessions <= 1;
  ui.summaryStream.textContent = `The stream took ${sessions} sessions (${current.reconnects} reconnection attempts); `
    + 'these figures are its last session’s.';
  ui.summary.hidden = false;
}

// ---- wiring ------------------------------------------------------------------------------------

function onBleepToggle() {
  if (run) run.graph.output.gain.setValueAtTime(ui.bleep.checked ? 1 : 0, run.context.currentTime);
}

ui.form.addEventListener('submit', start);
ui.stop.addEventListener('click', stop);
ui.bleep.addEventListener('change', onBleepToggle);
ui.token.addEventListener('change', showReadiness);
ui.language.addEventListener('change', () => {
  languageOverride = null;
  document.getElementById('language-note')?.remove();
  ui.language.removeAttribute('aria-describedby');
});
setState('idle');
loadLanguages();
showReadiness();
