// Feeds console/static/resampler.js a band-limited multi-tone signal the way the capture
// worklet does (downmix, then resample, then PCM16) in irregular chunk sizes, and prints the
// PCM16 output as JSON for tests/unit/test_console_resampler.py to check against the analytic
// 16 kHz signal.
//
//   node resampler_check.mjs '{"rate": 48000, "channels": 2, "seconds": 1.5,
//                              "tones": [[440, 0.2, 0.1], ...]}'     (frequency Hz, amplitude, phase rad)
//
// With two channels the left carries signal + d and the right signal - d (d another tone), so
// only a correct downmix gives the signal back.

import { DELAY_SAMPLES, Resampler, downmix, toPcm16 } from '../../../console/static/resampler.js';

const CHUNKS = [128, 128, 128, 37, 480, 1, 128, 1000, 256, 7, 128, 4096, 3, 128];
/** Chunk sizes: AudioWorklet's 128-sample render quanta, and others to catch state bugs. */
const DIFFERENCE_TONE = [3000, 0.3, 0.7];

const spec = JSON.parse(process.argv[2]);
const total = Math.round(spec.rate * spec.seconds);

function tone([frequency, amplitude, phase], index) {
  return amplitude * Math.sin(2 * Math.PI * frequency * (index / spec.rate) + phase);
}

function signalAt(index) {
  return spec.tones.reduce((sum, t) => sum + tone(t, index), 0);
}

function chunkChannels(start, length) {
  const signal = Float32Array.from({ length }, (_, i) => signalAt(start + i));
  if (spec.channels === 1) return [signal];
  const difference = Float32Array.from({ length }, (_, i) => tone(DIFFERENCE_TONE, start + i));
  return [signal.map((s, i) => s + difference[i]), signal.map((s, i) => s - difference[i])];
}

const resampler = new Resampler(spec.rate);
const samples = [];
let chunk = 0;
for (let start = 0; start < total; chunk += 1) {
  const length = Math.min(CHUNKS[chunk % CHUNKS.length], total - start);
  for (const value of resampler.process(downmix(chunkChannels(start, length)))) samples.push(toPcm16(value));
  start += length;
}
const held = samples.length;
for (const value of resampler.flush()) samples.push(toPcm16(value));

console.log(JSON.stringify({
  samples,
  held_back_until_flush: samples.length - held,
  warmup_samples: resampler.warmupSamples,
  half_width: resampler.halfWidth,
  delay_samples: DELAY_SAMPLES,
  phases: resampler.phases,
}));
