// Rectified-flow sampling as tinycats.flow does it: t = 0 is noise, t = 1 is data, x += dt * v, and with
// guidance v = v_null + guidance * (v_class - v_null) (both in one batch of two; guidance 1 runs the class alone).
// Heun's last step is Euler's (no evaluation at t = 1, as in tinycats.flow). A guidance interval [lo, hi] guides
// only the evaluations whose t has lo <= t <= hi (an hi of 1 has no upper bound); the others run the class
// alone, a batch of one.
// Arithmetic is rounded to float32 where Python's is float32, so the images agree with Generator.sample.

const f32 = Math.fround;

// NHWC (n, s, s, 3) -> NCHW (n, 3, s, s).
export function toNCHW(nhwc, n, size) {
  const out = new Float32Array(nhwc.length);
  const plane = size * size;
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) out[b * 3 * plane + c * plane + i] = nhwc[b * 3 * plane + i * 3 + c];
    }
  }
  return out;
}

// `velocity(x, times, labels)` runs the network on a batch (x: Float32Array NCHW) and resolves to its output.
// Returns x at t = 1 (Float32Array NCHW, the model's normalised range) for one image.
export async function sample({ velocity, noise, label, nullLabel, steps, guidance, sampler, guidanceInterval, onStep }) {
  if (sampler !== 'euler' && sampler !== 'heun') throw new Error(`unknown sampler ${sampler}`);
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`steps must be an integer >= 1, got ${steps}`);
  const [from, to] = guidanceInterval || [0, 1];
  if (!(0 <= from && from <= to && to <= 1)) {
    throw new Error(`the guidance interval must have 0 <= from <= to <= 1, got ${from} to ${to}`);
  }
  const [lo, hi] = [f32(from), f32(to)];
  const n = noise.length;
  const dt = f32(1 / steps);
  const scale = f32(guidance);
  const guided = guidance !== 1;
  const inside = (t) => lo <= t && (t <= hi || hi >= 1);
  const v = async (x, t) => {
    if (!guided || !inside(t)) return velocity(x, [t], [label]);
    const both = new Float32Array(2 * n);
    both.set(x);
    both.set(x, n);
    const out = await velocity(both, [t, t], [label, nullLabel]);
    const guidedV = new Float32Array(n);
    for (let i = 0; i < n; i++) guidedV[i] = f32(out[n + i] + f32(scale * f32(out[i] - out[n + i])));
    return guidedV;
  };
  let x = Float32Array.from(noise);
  for (let i = 0; i < steps; i++) {
    const t = f32(i * dt);
    const v1 = await v(x, t);
    const next = new Float32Array(n);
    if (sampler === 'euler' || i === steps - 1) {
      for (let j = 0; j < n; j++) next[j] = f32(x[j] + f32(dt * v1[j]));
    } else {
      const ahead = new Float32Array(n);
      for (let j = 0; j < n; j++) ahead[j] = f32(x[j] + f32(dt * v1[j]));
      const v2 = await v(ahead, f32(t + dt));
      const half = f32(dt * 0.5);
      for (let j = 0; j < n; j++) next[j] = f32(x[j] + f32(half * f32(v1[j] + v2[j])));
    }
    x = next;
    if (onStep) await onStep(i + 1, steps, x);
  }
  return x;
}

// NCHW (1, 3, s, s) in the model's normalisation -> RGBA bytes for a canvas: x * std + mean, x 255, rounded.
export function toRGBA(x, size, normalization) {
  const plane = size * size;
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let c = 0; c < 3; c++) {
    const mean = f32(normalization.mean[c]);
    const std = f32(normalization.std[c]);
    for (let i = 0; i < plane; i++) rgba[i * 4 + c] = Math.round(f32(f32(f32(x[c * plane + i] * std) + mean) * 255));
  }
  for (let i = 0; i < plane; i++) rgba[i * 4 + 3] = 255;
  return rgba;
}
