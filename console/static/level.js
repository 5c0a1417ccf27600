// Level meter: the loudness of each 20 ms PCM16 frame on a 0..1 scale, linear in decibels.

/** dBFS shown as an empty meter: quieter than a quiet room through a typical microphone. */
export const METER_FLOOR_DB = -60;
/** How fast the shown level falls, per frame, so that the meter does not flicker. */
export const METER_RELEASE = 0.85;

/** RMS level of a little-endian PCM16 frame in dBFS (-Infinity for digital silence). */
export function frameDbfs(pcm) {
  const view = new DataView(pcm);
  const count = view.byteLength >> 1;
  if (!count) return -Infinity;
  let sumSquares = 0;
  for (let i = 0; i < count; i += 1) {
    const sample = view.getInt16(2 * i, true) / 32768;
    sumSquares += sample * sample;
  }
  return 10 * Math.log10(sumSquares / count);
}

/** dBFS on the meter's 0..1 scale. */
export function meterLevel(dbfs) {
  if (!Number.isFinite(dbfs)) return 0;
  return Math.min(1, Math.max(0, (dbfs - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

/** A <meter> (or any element) showing the level: `value`, and `data-level` for tests. */
export class LevelMeter {
  constructor(element) {
    this.element = element;
    this.level = 0;
  }

  /** Show the frame's level: rises at once, falls gradually. */
  update(pcm) {
    const level = meterLevel(frameDbfs(pcm));
    this.level = Math.max(level, this.level * METER_RELEASE);
    this.show();
  }

  reset() {
    this.level = 0;
    this.show();
  }

  show() {
    const rounded = Math.round(this.level * 1000) / 1000;
    if ('value' in this.element) this.element.value = rounded;
    this.element.dataset.level = String(rounded);
  }
}
