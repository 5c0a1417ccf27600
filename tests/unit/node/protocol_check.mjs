// Runs console/static/protocol.js's and level.js's pure functions on the cases
// tests/unit/test_console_protocol.py sends as JSON on stdin, and prints the answers as JSON:
// the Python side checks them against edge/protocol.py, edge/client.py and numpy.

import { readFileSync } from 'node:fs';

import { meterLevel, frameDbfs } from '../../../console/static/level.js';
import * as protocol from '../../../console/static/protocol.js';

const cases = JSON.parse(readFileSync(0, 'utf8'));

function parsesOrError(text) {
  try {
    return protocol.parseEvent(text).type;
  } catch (error) {
    return `error: ${error.message}`;
  }
}

function ledgerCase({ maxSamples, frameSamples, frames, since }) {
  const ledger = new protocol.AudioLedger(maxSamples);
  for (let i = 0; i < frames; i += 1) {
    const pcm = new Int16Array(frameSamples).map((_, j) => i * frameSamples + j);
    ledger.add(pcm.buffer);
  }
  const { start, frames: kept } = ledger.since(since);
  const samples = kept.flatMap((buffer) => Array.from(new Int16Array(buffer)));
  return { start, oldest: ledger.oldest, end: ledger.end, samples };
}

function pcmOf(amplitude, count) {
  return new Int16Array(count).fill(amplitude).buffer;
}

const answers = {
  frame_samples: protocol.FRAME_SAMPLES,
  reconnect: {
    initial: protocol.RECONNECT_INITIAL_DELAY_S, factor: protocol.RECONNECT_FACTOR,
    max: protocol.RECONNECT_MAX_DELAY_S, jitter: protocol.RECONNECT_JITTER,
    attempts: protocol.RECONNECT_MAX_ATTEMPTS, codes: [...protocol.RECONNECT_CLOSE_CODES].sort(),
    errors: [...protocol.RECONNECT_ERRORS].sort(),
  },
  delays: cases.delays.map(([attempt, random]) => protocol.backoffDelayS(attempt, () => random)),
  configs: cases.configs.map((options) => protocol.configFrame(options)),
  end_frame: protocol.END_FRAME,
  parsed: cases.events.map(parsesOrError),
  bad_language: cases.errors.map((event) => [protocol.isBadLanguage(event), protocol.messageCode(event),
    protocol.endsStream(event)]),
  highlights: cases.highlights.map(({ text, spans, words }) => protocol.highlightParts(text, spans, words)),
  resume: cases.resume.map((c) => protocol.resumeSample(c)),
  percentiles: cases.percentiles.map(([values, q]) => protocol.percentile(values, q)),
  socket_urls: cases.socket_urls.map(([page, token]) => protocol.socketUrl(
    protocol.edgeBase(new URL('console/static/console.js', page)), token)),
  ledgers: cases.ledgers.map(ledgerCase),
  bleeps: cases.bleeps.map(([spans, offset]) => protocol.bleepIntervals(spans, offset)),
  not_yet_bleeped: cases.not_yet_bleeped.map(([intervals, done]) => protocol.notYetBleeped(intervals, done)),
  levels: cases.levels.map(([amplitude, count]) => [frameDbfs(pcmOf(amplitude, count)),
    meterLevel(frameDbfs(pcmOf(amplitude, count)))]),
};
console.log(JSON.stringify(answers));
