// Streaming polyphase windowed-sinc resampler: any input rate to 16 kHz (docs/PROTOCOL.md's rate).
//
// Pure ES module (no DOM, no Web Audio) so that the AudioWorklet imports it and Node tests it.
//
// Alignment: output sample n is the band-limited input at time n / outRate exactly (a zero-phase
// filter, DELAY_SAMPLES = 0), counted from the first input sample. The input before it is taken
// as silence, so the first `warmupSamples` outputs hold the filter's response to the stream's
// onset; after that the output is the band-limited input. The price of zero phase is lookahead:
// an output is produced once `halfWidth` input samples after its time have arrived (about 3 ms).

export const OUTPUT_SAMPLE_RATE = 16000;
/** Offset, in output samples, between an output sample and the input time it represents. */
export const DELAY_SAMPLES = 0;
/** Stopband attenuation in dB: the passband ripple is 10^(-A/20), 1e-5 here, well under 1 LSB. */
export const STOPBAND_DB = 100;
/** Passband edge as a share of the lower Nyquist frequency: 7 kHz of 8 kHz for 16 kHz output. */
export const PASSBAND_SHARE = 0.875;
/** Sub-sample phases tabulated at most; a rate ratio needing more (e.g. 47999 Hz) interpolates
 *  linearly between adjacent phases, which stays far below 1 LSB with a kernel this smooth. */
export const MAX_PHASES = 512;
/** Full scale of PCM16 as the edge's own tools write it (scripts/speech.py's pcm16). */
export const PCM16_FULL_SCALE = 32767;

/** Greatest common divisor of two positive integers. */
function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Modified Bessel function of the first kind, order 0 (the Kaiser window's), by its series. */
function besselI0(x) {
  let sum = 1;
  let term = 1;
  const quarterSquare = (x * x) / 4;
  for (let k = 1; k < 64 && term > sum * 1e-17; k += 1) {
    term *= quarterSquare / (k * k);
    sum += term;
  }
  return sum;
}

/** Kaiser's beta for a stopband attenuation in dB (Kaiser's empirical formula). */
export function kaiserBeta(attenuationDb) {
  if (attenuationDb > 50) return 0.1102 * (attenuationDb - 8.7);
  if (attenuationDb >= 21) return 0.5842 * (attenuationDb - 21) ** 0.4 + 0.07886 * (attenuationDb - 21);
  return 0;
}

function sinc(x) {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

/** Filter design for one rate pair: cutoff and half-width in input samples, Kaiser beta. */
export function designFilter(inRate, outRate = OUTPUT_SAMPLE_RATE) {
  const nyquist = Math.min(inRate, outRate) / 2;
  const passband = nyquist * PASSBAND_SHARE;
  const transition = nyquist - passband; // the stopband starts at the lower Nyquist: no aliasing
  const cutoff = (passband + nyquist) / 2 / inRate; // cycles per input sample
  const deltaOmega = (2 * Math.PI * transition) / inRate;
  const taps = (STOPBAND_DB - 7.95) / (2.285 * deltaOmega) + 1; // Kaiser's length estimate
  return { cutoff, halfWidth: Math.ceil(taps / 2), beta: kaiserBeta(STOPBAND_DB) };
}

/** Mono from planar channels (AudioWorklet's inputs[0]): their mean, so a centred source keeps
 *  its level and a one-sided one loses 6 dB rather than clipping. */
export function downmix(channels) {
  if (channels.length === 1) return channels[0];
  const length = channels[0].length;
  const mono = new Float32Array(length);
  for (const channel of channels) {
    for (let i = 0; i < length; i += 1) mono[i] += channel[i];
  }
  for (let i = 0; i < length; i += 1) mono[i] /= channels.length;
  return mono;
}

/** A float sample in [-1, 1] as a PCM16 integer, rounded and clipped. */
export function toPcm16(sample) {
  const scaled = Math.round(sample * PCM16_FULL_SCALE);
  return Math.max(-32768, Math.min(32767, scaled));
}

export class Resampler {
  /**
   * @param {number} inRate input sample rate in Hz (AudioWorklet's `sampleRate`), 8 kHz and up
   * @param {number} outRate output sample rate in Hz
   */
  constructor(inRate, outRate = OUTPUT_SAMPLE_RATE) {
    if (!(inRate >= 1000 && Number.isInteger(inRate))) throw new RangeError(`unsupported input rate ${inRate}`);
    this.inRate = inRate;
    this.outRate = outRate;
    const divisor = gcd(inRate, outRate);
    // Output n lies at input time n * step / up: `up` sub-sample positions, advancing `step`.
    this.up = outRate / divisor;
    this.step = inRate / divisor;
    this.phases = Math.min(this.up, MAX_PHASES);
    const { cutoff, halfWidth, beta } = designFilter(inRate, outRate);
    this.halfWidth = halfWidth;
    this.taps = 2 * halfWidth;
    this.table = buildTable(this.phases, halfWidth, cutoff, beta);
    /** Outputs whose kernel reaches before the first input sample (onset transient). */
    this.warmupSamples = Math.ceil(((halfWidth - 1) * outRate) / inRate) + 1;
    // Input history: `history[i]` is input sample `historyStart + i`; the silence before the
    // stream is there from the start, so the first outputs need no special case.
    this.history = new Float64Array(Math.max(4096, 4 * this.taps));
    this.historyStart = -halfWidth;
    this.historyLength = halfWidth;
    this.position = 0; // integer part of the next output's input time
    this.fraction = 0; // its fractional part, in 1/up
    this.produced = 0;
  }

  /** Resample one chunk of any length; returns the outputs it completes (maybe none). */
  process(input) {
    this.append(input);
    return this.drain(this.historyStart + this.historyLength - 1);
  }

  /** The outputs still held back for lookahead, as if silence followed the last input. */
  flush() {
    const lastInput = this.historyStart + this.historyLength - 1;
    const end = this.outputTimeAfter(lastInput);
    this.append(new Float64Array(this.halfWidth + 1));
    return this.drain(this.historyStart + this.historyLength - 1, end);
  }

  /** Index of the first output whose time is after input sample `index`. */
  outputTimeAfter(index) {
    return Math.floor(((index + 1) * this.up - 1) / this.step) + 1;
  }

  append(input) {
    this.compact();
    const needed = this.historyLength + input.length;
    if (needed > this.history.length) {
      const grown = new Float64Array(Math.max(needed, 2 * this.history.length));
      grown.set(this.history.subarray(0, this.historyLength));
      this.history = grown;
    }
    this.history.set(input, this.historyLength);
    this.historyLength = needed;
  }

  /** Drop the input no future output reaches back to. */
  compact() {
    const keepFrom = this.position - this.halfWidth + 1 - this.historyStart;
    if (keepFrom <= 0) return;
    this.history.copyWithin(0, keepFrom, this.historyLength);
    this.historyLength -= keepFrom;
    this.historyStart += keepFrom;
  }

  /** Outputs whose kernel ends at or before input sample `lastInput` (and before `endOutput`). */
  drain(lastInput, endOutput = Infinity) {
    const out = [];
    while (this.position + this.halfWidth <= lastInput && this.produced < endOutput) {
      out.push(this.outputAt());
      this.fraction += this.step;
      this.position += Math.floor(this.fraction / this.up);
      this.fraction %= this.up;
      this.produced += 1;
    }
    return Float32Array.from(out);
  }

  /** The output at input time `position + fraction / up`. */
  outputAt() {
    const first = this.position - this.halfWidth + 1 - this.historyStart;
    const exact = (this.fraction * this.phases) / this.up;
    const phase = Math.floor(exact);
    const weight = exact - phase;
    const value = this.dot(phase, first);
    // Skipped when the ratio's phases are all tabulated (weight is then always 0).
    return weight === 0 ? value : value + weight * (this.dot(phase + 1, first) - value);
  }

  dot(phase, first) {
    const { table, history, taps } = this;
    const offset = phase * taps;
    let sum = 0;
    for (let j = 0; j < taps; j += 1) sum += table[offset + j] * history[first + j];
    return sum;
  }
}

/**
 * Coefficients of `phases + 1` sub-sample phases (the last one is phase 0 one sample later, the
 * neighbour the interpolation needs), each normalised to unit DC gain so that every phase has
 * the same gain and a constant stays constant.
 */
function buildTable(phases, halfWidth, cutoff, beta) {
  const taps = 2 * halfWidth;
  const table = new Float64Array((phases + 1) * taps);
  const windowNorm = besselI0(beta);
  for (let phase = 0; phase <= phases; phase += 1) {
    let sum = 0;
    for (let j = 0; j < taps; j += 1) {
      // Distance from output time to the input sample this tap multiplies.
      const tau = phase / phases + halfWidth - 1 - j;
      const r = tau / halfWidth;
      const window = Math.abs(r) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / windowNorm;
      const h = 2 * cutoff * sinc(2 * cutoff * tau) * window;
      table[phase * taps + j] = h;
      sum += h;
    }
    for (let j = 0; j < taps; j += 1) table[phase * taps + j] /= sum;
  }
  return table;
}
