// A photo -> the classifier's input, exactly as tinycats does it in Python (models.json `preprocess`):
//  1. fit: the whole picture, longer side resized to `fit_size` with Pillow's antialiased bilinear filter
//     (Image.resize(..., BILINEAR, reducing_gap=None): its fixed-point coefficients and uint8 rounding after
//     each pass), as tinycats.data.cache.fit does for the training cache and for prediction;
//  2. crop: the central square of side `crop_fraction` x the shorter side, resized to `size` with
//     antialiased linear weights, as tinycats.data.augment.eval_transform does;
//  3. normalise: pixels in [0, 1], then (x - mean) / std per channel, laid out NCHW.

const PRECISION_BITS = 32 - 8 - 2; // Pillow's 8-bit resampling precision.

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
function pillowCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filterscale;
  const ss = 1 / filterscale;
  const taps = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(Math.max(xmax, 0));
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const d = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = d < 1 ? 1 - d : 0;
      ww += k[x];
    }
    const fixed = new Int32Array(k.length);
    for (let x = 0; x < k.length; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      fixed[x] = Math.trunc((w < 0 ? -0.5 : 0.5) + w * (1 << PRECISION_BITS));
    }
    taps.push({ start: xmin, weights: fixed });
  }
  return taps;
}

function clip8(sum) {
  const v = sum >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// Pillow's two-pass resize of an RGB uint8 image (h, w, 3) to (outH, outW, 3): horizontal pass, then vertical.
export function pillowResize(rgb, h, w, outH, outW) {
  let src = rgb;
  let srcW = w;
  if (outW !== w) {
    const taps = pillowCoefficients(w, outW);
    const tmp = new Uint8Array(h * outW * 3);
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < outW; xx++) {
        const { start, weights } = taps[xx];
        for (let c = 0; c < 3; c++) {
          let sum = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < weights.length; x++) sum += src[(y * w + start + x) * 3 + c] * weights[x];
          tmp[(y * outW + xx) * 3 + c] = clip8(sum);
        }
      }
    }
    src = tmp;
    srcW = outW;
  }
  if (outH === h) return src === rgb ? rgb.slice() : src;
  const taps = pillowCoefficients(h, outH);
  const out = new Uint8Array(outH * srcW * 3);
  for (let yy = 0; yy < outH; yy++) {
    const { start, weights } = taps[yy];
    for (let x = 0; x < srcW; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < weights.length; y++) sum += src[((start + y) * srcW + x) * 3 + c] * weights[y];
        out[(yy * srcW + x) * 3 + c] = clip8(sum);
      }
    }
  }
  return out;
}

// tinycats.data.cache.fit: the longer side to `size` (aspect kept, rounded half to even as Python's round).
export function fit(rgb, h, w, size) {
  const scale = size / Math.max(w, h);
  const roundHalfEven = (v) => {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  const nw = Math.min(size, Math.max(1, roundHalfEven(w * scale)));
  const nh = Math.min(size, Math.max(1, roundHalfEven(h * scale)));
  if (nw === w && nh === h) return { rgb: rgb.slice(), h, w };
  return { rgb: pillowResize(rgb, h, w, nh, nw), h: nh, w: nw };
}

// tinycats.data.augment._axis_weights: antialiased linear weights taking [start, start + length) to `outSize`.
function axisWeights(start, length, inSize, outSize) {
  const invScale = length / outSize;
  const width = Math.max(invScale, 1);
  const rows = [];
  for (let o = 0; o < outSize; o++) {
    const centre = start + (o + 0.5) * invScale - 0.5;
    const weights = new Float64Array(inSize);
    let total = 0;
    for (let p = 0; p < inSize; p++) {
      weights[p] = Math.max(0, 1 - Math.abs(centre - p) / width);
      total += weights[p];
    }
    total = Math.max(total, 1e-12);
    for (let p = 0; p < inSize; p++) weights[p] /= total;
    rows.push(weights);
  }
  return rows;
}

// tinycats.data.augment.eval_transform on one fitted picture: float pixels in [0, 1], (size, size, 3) HWC.
export function centreCrop(rgb, h, w, cropFraction, size) {
  const side = cropFraction * Math.min(h, w);
  const rows = axisWeights((h - side) / 2, side, h, size);
  const cols = axisWeights((w - side) / 2, side, w, size);
  const across = new Float64Array(h * size * 3); // Columns first: (h, size, 3).
  for (let y = 0; y < h; y++) {
    for (let o = 0; o < size; o++) {
      const weights = cols[o];
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let x = 0; x < w; x++) if (weights[x]) sum += weights[x] * rgb[(y * w + x) * 3 + c];
        across[(y * size + o) * 3 + c] = sum;
      }
    }
  }
  const out = new Float64Array(size * size * 3);
  for (let o = 0; o < size; o++) {
    const weights = rows[o];
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let y = 0; y < h; y++) if (weights[y]) sum += weights[y] * across[(y * size + x) * 3 + c];
        out[(o * size + x) * 3 + c] = sum / 255;
      }
    }
  }
  return out;
}

// RGBA (from a canvas) -> RGB, transparency composited on white as tinycats.data.cache.read_image_file does.
export function rgbaToRgb(rgba) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const a = rgba[i + 3];
    for (let c = 0; c < 3; c++) rgb[j + c] = Math.round((rgba[i + c] * a + 255 * (255 - a)) / 255);
  }
  return rgb;
}

// The whole policy: RGB uint8 (h, w, 3) -> { input: Float32Array NCHW (1, 3, size, size), pixels: HWC in [0, 1] }.
// `preprocess` and `normalization` are models.json's classifier.preprocess and classifier.input.normalization.
export function classifierInput(rgb, h, w, preprocess, normalization) {
  const fitted = preprocess.fit_size ? fit(rgb, h, w, preprocess.fit_size) : { rgb, h, w };
  const size = preprocess.size;
  const pixels = centreCrop(fitted.rgb, fitted.h, fitted.w, preprocess.crop_fraction, size);
  const input = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(normalization.mean[c]);
    const std = Math.fround(normalization.std[c]);
    for (let i = 0; i < size * size; i++) {
      input[c * size * size + i] = Math.fround(Math.fround(pixels[i * 3 + c]) - mean) / std;
    }
  }
  return { input, pixels };
}
