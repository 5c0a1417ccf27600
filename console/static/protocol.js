// The /ws/audio protocol as the console speaks it (docs/PROTOCOL.md; moderation/protocol.py is the
// definition): frames built and parsed, the reconnection policy of the reference client
// (moderation/client.py), and the pure logic the page renders with. No DOM here, so Node tests it.

import { OUTPUT_SAMPLE_RATE } from './resampler.js';

export const SAMPLE_RATE = OUTPUT_SAMPLE_RATE;
export const ENCODING = 'pcm_s16le';
export const CHANNELS = 1;
/** 20 ms frames, what a desktop capture loop sends (moderation/client.py's FRAME_MS). */
export const FRAME_MS = 20;
export const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;
export const BYTES_PER_SAMPLE = 2;

export const NORMAL_CLOSURE = 1000;
/** Service Restart (the edge shut down) and Try Again Later (busy or draining): reconnect (§7). */
export const RECONNECT_CLOSE_CODES = new Set([1012, 1013]);
/** Error events that come with those close codes: no failure of a stream that goes on elsewhere. */
export const RECONNECT_ERRORS = new Set(['server_shutdown', 'server_draining', 'server_busy']);
// Backoff, the same as moderation/client.py's: 0.5 s, 1 s, 2 s ... up to 10 s, each less up to half
// at random, giving up after 8 attempts in a row without a `ready` event.
export const RECONNECT_INITIAL_DELAY_S = 0.5;
export const RECONNECT_FACTOR = 2.0;
export const RECONNECT_MAX_DELAY_S = 10.0;
export const RECONNECT_JITTER = 0.5;
export const RECONNECT_MAX_ATTEMPTS = 8;

export const EVENT_TYPES = new Set(['ready', 'config', 'segment', 'interim', 'error', 'summary']);
export const END_FRAME = JSON.stringify({ type: 'end' });

/** Close codes the page explains; the others are shown as their number. */
export const CLOSE_REASONS = {
  1000: 'ended',
  1006: 'connection lost',
  1008: 'policy violation',
  1009: 'frame too large',
  1011: 'edge fault',
  1012: 'edge restarting',
  1013: 'edge busy or draining',
};

/** The wait in seconds before attempt `attempt` (1, 2, ...) of a row; `random` in [0, 1). */
export function backoffDelayS(attempt, random = Math.random) {
  const step = Math.min(RECONNECT_MAX_DELAY_S, RECONNECT_INITIAL_DELAY_S * RECONNECT_FACTOR ** (attempt - 1));
  return step * (1 - RECONNECT_JITTER * random());
}

/** Whether a session that closed with `code` is to be followed by a new one (§7). */
export function shouldReconnect(code) {
  return RECONNECT_CLOSE_CODES.has(code);
}

/** The edge's root URL, from a module URL two levels below it (/console/static/x.js), so
 *  that an edge served under a path prefix works too. */
export function edgeBase(moduleUrl) {
  return new URL('../../', moduleUrl);
}

/** The WebSocket URL of /ws/audio: ws:// or wss:// like the page, the credential as `?token=`
 *  because browsers cannot set an Authorization header on a WebSocket (docs/SECURITY.md). */
export function socketUrl(base, token) {
  const url = new URL('ws/audio', base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) url.searchParams.set('token', token);
  return url.toString();
}

/** Headers for the ops endpoints: a bearer credential when there is one. */
export function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The config text frame: 16 kHz mono PCM16 (what the worklet sends), the language (omitted
 *  for the model's default), whether to send word times and whether to send interim results. */
export function configFrame({ language = '', wordTimestamps = false, interim = false } = {}) {
  const frame = { type: 'config', sample_rate: SAMPLE_RATE, encoding: ENCODING, channels: CHANNELS };
  if (language) frame.language = language;
  frame.word_timestamps = Boolean(wordTimestamps);
  frame.interim = Boolean(interim);
  return JSON.stringify(frame);
}

/** A server text frame as an event object; Error for anything that is not one of the six. */
export function parseEvent(text) {
  const event = JSON.parse(text);
  if (event === null || typeof event !== 'object' || !EVENT_TYPES.has(event.type)) {
    throw new Error(`not a server event: ${String(text).slice(0, 200)}`);
  }
  return event;
}

/** Whether an error event is a `bad_config` about the language (the message names the field). */
export function isBadLanguage(event) {
  return event.code === 'bad_config' && /^language\b/.test(event.message || '');
}

/** The `data-code` the page shows for an error event that is not about one segment. */
export function messageCode(event) {
  return isBadLanguage(event) ? 'bad_language' : event.code;
}

/** Whether an error event ends the console's stream: a rejected config (the audio would be
 *  moderated under settings the user did not choose), not a per-segment failure or a reconnect. */
export function endsStream(event) {
  return event.code === 'bad_config' || event.code === 'config_after_audio';
}

/**
 * Where the next session starts, in samples of the stream (§7, "Go on from where the edge
 * stopped reading"): after a summary, its `audio_seconds` past the session's start; after a
 * refusal (no `ready`), where the refused session would have started; after a session lost
 * without a summary, past everything it was sent.
 */
export function resumeSample({ sessionStart, sentUpTo, gotReady, summaryAudioSeconds = null }) {
  if (summaryAudioSeconds !== null && summaryAudioSeconds !== undefined) {
    return Math.min(sentUpTo, sessionStart + Math.round(summaryAudioSeconds * SAMPLE_RATE));
  }
  return gotReady ? sentUpTo : sessionStart;
}

/** The q-th percentile (0..100) of numbers, interpolated linearly (numpy's default, as the
 *  edge's summary). Null without numbers. */
export function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (q / 100) * (sorted.length - 1);
  const below = Math.floor(rank);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (rank - below) * (sorted[above] - sorted[below]);
}

/** Seconds within which a word counts as touching a span: below Whisper's time resolution. */
const SPAN_TOLERANCE_S = 0.005;

function overlaps(word, span) {
  return word.start_s < span.end_s - SPAN_TOLERANCE_S && word.end_s > span.start_s + SPAN_TOLERANCE_S;
}

/** [start, end) character ranges of the transcript's words that lie in a span, by the words'
 *  times; words not found in the text are passed over. */
function rangesByWordTimes(text, spans, words) {
  const ranges = [];
  let cursor = 0;
  for (const word of words) {
    const token = word.word.trim();
    const at = token ? text.indexOf(token, cursor) : -1;
    if (at < 0) continue;
    cursor = at + token.length;
    if (spans.some((span) => overlaps(word, span))) ranges.push([at, cursor]);
  }
  return ranges;
}

/** [start, end) character ranges where a span's text occurs (the first occurrence from the
 *  previous match on, case-insensitive when the exact case is not there). */
function rangesBySpanText(text, spans) {
  const ranges = [];
  const lower = text.toLowerCase();
  for (const span of spans) {
    const needle = (span.text || '').trim();
    if (!needle) continue;
    let at = text.indexOf(needle);
    if (at < 0) at = lower.indexOf(needle.toLowerCase());
    if (at >= 0) ranges.push([at, at + needle.length]);
  }
  return ranges;
}

/** Sorted, overlapping or whitespace-separated ranges merged, so "son of a" is one mark. */
function mergeRanges(text, ranges) {
  const merged = [];
  for (const [start, end] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = merged[merged.length - 1];
    if (last && (start <= last[1] || /^\s*$/.test(text.slice(last[1], start)))) {
      last[1] = Math.max(last[1], end);
    } else {
      merged.push([start, end]);
    }
  }
  return merged;
}

/**
 * The transcript cut into parts `{text, harmful}` for highlighting: harmful where a span lies,
 * matched by the words' times when the segment has `words` (word_timestamps), else by the
 * span's text.
 */
export function highlightParts(text, spans = [], words = null) {
  if (!spans.length || !text) return text ? [{ text, harmful: false }] : [];
  const ranges = words && words.length ? rangesByWordTimes(text, spans, words) : rangesBySpanText(text, spans);
  const parts = [];
  let cursor = 0;
  for (const [start, end] of mergeRanges(text, ranges)) {
    if (start > cursor) parts.push({ text: text.slice(cursor, start), harmful: false });
    parts.push({ text: text.slice(start, end), harmful: true });
    cursor = end;
  }
  if (cursor < text.length) parts.push({ text: text.slice(cursor), harmful: false });
  return parts;
}

/** Harmful spans as [start, end] stream seconds, overlapping ones merged (for the bleep). */
export function bleepIntervals(spans, offsetS = 0) {
  const sorted = spans.map((s) => [offsetS + s.start_s, offsetS + s.end_s]).sort((a, b) => a[0] - b[0]);
  const merged = [];
  for (const [start, end] of sorted) {
    const last = merged[merged.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  return merged;
}

/** The [start, end] intervals not already inside one of `done` (bleeped from an interim event:
 *  its final's span over the same word is no new bleep, and no late one). */
export function notYetBleeped(intervals, done) {
  const inside = ([start, end]) => done.some(([a, b]) => a - SPAN_TOLERANCE_S <= start && end <= b + SPAN_TOLERANCE_S);
  return intervals.filter((interval) => !inside(interval));
}

/** Stream seconds as m:ss.s. */
export function formatStreamTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - minutes * 60).toFixed(1).padStart(4, '0');
  return `${minutes}:${rest}`;
}

/** Name the capture worklet registers its processor under (capture-worklet.js). */
export const CAPTURE_PROCESSOR = 'pcm16-capture';

/**
 * The captured stream's PCM16 frames, kept so that a new session can be sent again what the
 * previous one did not read (§7), bounded to the most recent `maxSamples`. Positions are
 * samples of the stream since capture began.
 */
export class AudioLedger {
  constructor(maxSamples) {
    this.maxSamples = maxSamples;
    this.frames = []; // {start, pcm: ArrayBuffer}
    this.end = 0; // sample after the last frame
    this.kept = 0;
  }

  /** The oldest sample still kept. */
  get oldest() {
    return this.frames.length ? this.frames[0].start : this.end;
  }

  add(pcm) {
    const samples = pcm.byteLength / BYTES_PER_SAMPLE;
    this.frames.push({ start: this.end, pcm });
    this.end += samples;
    this.kept += samples;
    while (this.kept > this.maxSamples && this.frames.length > 1) {
      this.kept -= this.frames.shift().pcm.byteLength / BYTES_PER_SAMPLE;
    }
  }

  /** The frames from sample `sample` on (the first one cut there), and where they start: later
   *  than `sample` when that audio is no longer kept. */
  since(sample) {
    const start = Math.max(sample, this.oldest);
    const frames = [];
    // Called for every live frame: find the first frame by bisection, not by a scan.
    for (let i = this.firstEndingAfter(start); i < this.frames.length; i += 1) {
      const frame = this.frames[i];
      frames.push(frame.start < start ? frame.pcm.slice((start - frame.start) * BYTES_PER_SAMPLE) : frame.pcm);
    }
    return { start, frames };
  }

  /** Index of the first frame that ends after `sample` (frames are contiguous, in order). */
  firstEndingAfter(sample) {
    let low = 0;
    let high = this.frames.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      const frame = this.frames[middle];
      if (frame.start + frame.pcm.byteLength / BYTES_PER_SAMPLE <= sample) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}
