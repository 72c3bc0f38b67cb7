// The page's seeded noise: the same numbers as tinycats.flow.browser_noise(seed, n, size) in Python.
//
// Counter-based, no library: k = lowbias32(seed) + 0x9E3779B9 and element i (NHWC order) takes the word
// w_i = lowbias32(lowbias32(i + k) + k), all mod 2^32. Each pair of words (2j, 2j+1) gives two uniforms
// u = ((w >>> 8) + 0.5) / 2^24 in (0, 1); Box-Muller turns them into sqrt(-2 ln u1) * (cos, sin)(2 pi u2),
// computed in float64 and stored as float32. Not for cryptography.

// Chris Wellons' lowbias32 integer hash.
export function lowbias32(x) {
  x = x >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

// `count` standard normal float32 values for a seed (an integer 0 .. 2^32 - 1).
export function noise(seed, count) {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new Error(`the seed must be an integer from 0 to 4294967295, got ${seed}`);
  }
  const key = (lowbias32(seed) + 0x9e3779b9) >>> 0;
  const word = (i) => lowbias32(lowbias32((i + key) >>> 0) + key);
  const uniform = (w) => ((w >>> 8) + 0.5) / 16777216;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform(word(i))));
    const angle = 2 * Math.PI * uniform(word(i + 1));
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}
