// AudioWorkletProcessor of the console's capture: downmix to mono, resample from the
// context's rate to 16 kHz, quantise to PCM16 little-endian, and post 20 ms frames (320
// samples, 640 bytes) to the page, which sends them as binary WebSocket frames as they are.
//
// Runs in the AudioWorkletGlobalScope: `sampleRate`, `currentTime` and `registerProcessor`
// are its globals. Static imports work there (Chromium and Firefox load worklets as modules).

// FRAME_SAMPLES: 20 ms at 16 kHz. docs/PROTOCOL.md takes frames of any size; 20 ms is what
// desktop capture loops send, small enough for the edge's VAD to see speech end at once.
import { BYTES_PER_SAMPLE, CAPTURE_PROCESSOR, FRAME_SAMPLES } from './protocol.js';
import { Resampler, downmix, toPcm16 } from './resampler.js';

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate);
    this.frame = new DataView(new ArrayBuffer(FRAME_SAMPLES * BYTES_PER_SAMPLE));
    this.filled = 0;
    this.frameIndex = 0;
    this.started = false;
    this.stopped = false;
    this.port.onmessage = (event) => this.onCommand(event.data);
  }

  /** `{type: 'flush'}`: post what is held back (lookahead and a partial frame), then stop. */
  onCommand(command) {
    if (command && command.type === 'flush' && !this.stopped) {
      this.push(this.resampler.flush());
      this.postFrame(true);
      this.stopped = true;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (this.stopped) return false;
    if (!channels || channels.length === 0) return true; // not connected yet: keep alive
    if (!this.started) {
      // Stream sample 0 is this quantum's first sample: the page maps stream times (spans) to
      // context times with it, for the delayed bleep playback.
      this.started = true;
      this.port.postMessage({ type: 'started', contextTime: currentTime, inputRate: sampleRate,
                              warmupSamples: this.resampler.warmupSamples });
    }
    this.push(this.resampler.process(downmix(channels)));
    return true;
  }

  push(samples) {
    for (let i = 0; i < samples.length; i += 1) {
      this.frame.setInt16(this.filled * BYTES_PER_SAMPLE, toPcm16(samples[i]), true); // little-endian
      this.filled += 1;
      if (this.filled === FRAME_SAMPLES) this.postFrame(false);
    }
  }

  /** Post the frame so far (transferring its buffer) and start a new one. */
  postFrame(final) {
    const bytes = this.frame.buffer.slice(0, this.filled * BYTES_PER_SAMPLE);
    this.port.postMessage({ type: 'frame', index: this.frameIndex, pcm: bytes, final }, [bytes]);
    this.frameIndex += 1;
    this.filled = 0;
  }
}

registerProcessor(CAPTURE_PROCESSOR, CaptureProcessor);
