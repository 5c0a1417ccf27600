// Runs console/static/capture-worklet.js in a stand-in for the AudioWorkletGlobalScope
// (sampleRate, currentTime, AudioWorkletProcessor with a port, registerProcessor): stereo
// 128-sample render quanta in, then a flush; prints the posted messages as JSON, frames as
// their little-endian PCM16 samples, for tests/unit/test_console_resampler.py.
//
//   node worklet_check.mjs '{"rate": 48000, "seconds": 1.0, "tones": [[440, 0.2, 0.1], ...]}'

const spec = JSON.parse(process.argv[2]);
const QUANTUM = 128;
const messages = [];

class FakePort {
  constructor() {
    this.onmessage = null;
  }

  postMessage(data) {
    messages.push(data);
  }
}

globalThis.sampleRate = spec.rate;
globalThis.currentTime = 1.25;
globalThis.AudioWorkletProcessor = class {
  constructor() {
    this.port = new FakePort();
  }
};
let Processor = null;
globalThis.registerProcessor = (name, processorClass) => {
  Processor = processorClass;
  globalThis.registeredName = name;
};

await import('../../../console/static/capture-worklet.js');
const processor = new Processor();
const total = Math.round(spec.rate * spec.seconds);
const signalAt = (i) => spec.tones.reduce((sum, [f, a, p]) => sum + a * Math.sin(2 * Math.PI * f * (i / spec.rate) + p), 0);
let alive = processor.process([[]]); // an input not connected yet: no channels
for (let start = 0; start < total; start += QUANTUM) {
  const left = Float32Array.from({ length: QUANTUM }, (_, i) => signalAt(start + i) + 0.1);
  const right = Float32Array.from({ length: QUANTUM }, (_, i) => signalAt(start + i) - 0.1);
  alive = processor.process([[left, right]], [[new Float32Array(QUANTUM)]]) && alive;
}
processor.port.onmessage({ data: { type: 'flush' } });
const afterFlush = processor.process([[new Float32Array(QUANTUM)]], [[new Float32Array(QUANTUM)]]);

console.log(JSON.stringify({
  name: globalThis.registeredName,
  alive,
  after_flush: afterFlush,
  quantum: QUANTUM,
  messages: messages.map((m) => (m.type === 'frame'
    ? { ...m, pcm: Array.from({ length: m.pcm.byteLength / 2 }, (_, i) => new DataView(m.pcm).getInt16(2 * i, true)) }
    : m)),
}));
