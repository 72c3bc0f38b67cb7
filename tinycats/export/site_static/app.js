// tinycats in the browser: classify a photo and generate a class with the exported ONNX models.
// Everything about the models comes from models.json (sizes, classes, null label, normalisation, files).
// `window.tinycats` holds the page's state and last results (for automation and tests);
// `document.body.dataset.state` says what the page is doing.

import * as ort from './ort/ort.min.mjs';
import { noise } from './noise.js';
import { classifierInput, rgbaToRgb } from './preprocess.js';
import { sample, toNCHW, toRGBA } from './sampler.js';

const $ = (id) => document.getElementById(id);
const state = { backend: null, classify: { count: 0 }, generate: { count: 0 }, noise, spec: null };
window.tinycats = state;
ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;

function setState(name, message) {
  document.body.dataset.state = name;
  if (message !== undefined) $('status').textContent = message;
}

function fail(error) {
  console.error(error);
  state.error = String(error && error.message ? error.message : error);
  setState('error', `Error: ${state.error}`);
}

// WebGPU only when an adapter is actually obtained; otherwise wasm, multi-threaded when cross-origin isolated.
async function chooseBackend(preference) {
  const notes = [];
  if (preference !== 'wasm') {
    let adapter = null;
    if (navigator.gpu) {
      try {
        adapter = await navigator.gpu.requestAdapter();
      } catch (e) {
        notes.push(`WebGPU adapter request failed (${e.message})`);
      }
    }
    if (adapter) return { name: 'webgpu', label: 'WebGPU', notes };
    notes.push(navigator.gpu ? 'no WebGPU adapter' : 'no WebGPU in this browser');
  }
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  const why = self.crossOriginIsolated ? 'cross-origin isolated' : 'not cross-origin isolated: serve with COOP/COEP';
  return { name: 'wasm', label: `wasm, ${threads} thread${threads > 1 ? 's' : ''} (${why})`, notes };
}

async function createSession(path) {
  const options = { executionProviders: [state.backend.name], graphOptimizationLevel: 'all' };
  try {
    return await ort.InferenceSession.create(path, options);
  } catch (e) {
    if (state.backend.name !== 'webgpu') throw e;
    state.backend = await chooseBackend('wasm'); // A WebGPU adapter that cannot run the model: fall back.
    state.backend.notes.push(`WebGPU could not load ${path} (${e.message})`);
    showBackend();
    return ort.InferenceSession.create(path, { ...options, executionProviders: ['wasm'] });
  }
}

function showBackend() {
  const notes = state.backend.notes.length ? ` — ${state.backend.notes.join('; ')}` : '';
  $('backend-info').textContent = `Running on ${state.backend.label}${notes}`;
  document.body.dataset.backend = state.backend.name;
}

// <select> of a model's files: the float32 file, and the int8 one only when models.json lists it.
function fileChoices(select, entries) {
  select.replaceChildren();
  for (const [key, entry] of entries) {
    if (!entry || !entry.path) continue;
    const option = new Option(`${key} (${entry.path}, ${entry.sizeFormatted || ''})`, entry.path);
    select.append(option);
  }
  select.parentElement.hidden = select.options.length < 2;
}

async function loadSessions() {
  const spec = state.spec;
  setState('loading', 'Loading the models…');
  state.sessions = {};
  if (spec.classifier) state.sessions.classifier = await createSession($('classifier-file').value);
  if (spec.generator) state.sessions.generator = await createSession($('generator-file').value);
  setState('ready', 'Ready.');
}

// ---- Classify ----

async function readPixels(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = $('photo-view');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
  return { rgb: rgbaToRgb(data), h: bitmap.height, w: bitmap.width };
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

function drawPixels(canvas, pixels, size) {
  canvas.width = canvas.height = size;
  const rgba = new Uint8ClampedArray(size * size * 4);
  for (let i = 0; i < size * size; i++) {
    for (let c = 0; c < 3; c++) rgba[i * 4 + c] = Math.round(pixels[i * 3 + c] * 255);
    rgba[i * 4 + 3] = 255;
  }
  canvas.getContext('2d').putImageData(new ImageData(rgba, size, size), 0, 0);
}

async function classify(file) {
  const spec = state.spec.classifier;
  setState('classifying', `Classifying ${file.name}…`);
  const { rgb, h, w } = await readPixels(file);
  const start = performance.now();
  const { input, pixels } = classifierInput(rgb, h, w, spec.preprocess, spec.input.normalization);
  const size = spec.preprocess.size;
  const prepared = performance.now();
  const feeds = { [spec.input.name]: new ort.Tensor('float32', input, [1, 3, size, size]) };
  const outputs = await state.sessions.classifier.run(feeds);
  const done = performance.now();
  const probs = softmax(outputs[spec.output.name].data);
  const classes = spec.output.classes;
  drawPixels($('model-input'), pixels, size);
  $('pictures').hidden = false;
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $('top').replaceChildren(
    ...order.map(([p, i]) => {
      const item = document.createElement('li');
      item.innerHTML = `<span class="name"></span><span class="bar"><span></span></span><span class="p"></span>`;
      item.querySelector('.name').textContent = classes[i];
      item.querySelector('.bar span').style.width = `${(100 * p).toFixed(1)}%`;
      item.querySelector('.p').textContent = `${(100 * p).toFixed(2)}%`;
      return item;
    }),
  );
  const ms = { preprocess: prepared - start, model: done - prepared };
  $('classify-time').textContent =
    `${file.name}: ${w}×${h} px; preprocessing ${ms.preprocess.toFixed(1)} ms, ` +
    `model ${ms.model.toFixed(1)} ms (${state.backend.name})`;
  Object.assign(state.classify, { file: file.name, probs, classes, ms, count: state.classify.count + 1 });
  setState('classified', 'Ready.');
}

// ---- Generate ----

function generatorSize(spec) {
  return spec.inputs[0].shape[2];
}

async function generate() {
  const spec = state.spec.generator;
  const size = generatorSize(spec);
  const [noiseInput, timeInput, labelInput] = spec.inputs.map((i) => i.name);
  const label = Number($('label').value);
  const steps = Number($('steps').value);
  const guidance = Number($('guidance').value);
  const sampler = $('sampler').value;
  const guidanceInterval = [Number($('guidance-from').value), Number($('guidance-to').value)];
  const seed = Number($('seed').value);
  const session = state.sessions.generator;
  setState('generating', `Generating (seed ${seed})…`);
  const progress = $('progress');
  progress.max = steps;
  progress.value = 0;
  const canvas = $('sample');
  canvas.width = canvas.height = size;
  const context = canvas.getContext('2d');
  const draw = (x) => context.putImageData(new ImageData(toRGBA(x, size, spec.normalization), size, size), 0, 0);
  const start = performance.now();
  const velocity = async (x, times, labels) => {
    const n = labels.length;
    const outputs = await session.run({
      [noiseInput]: new ort.Tensor('float32', x, [n, 3, size, size]),
      [timeInput]: new ort.Tensor('float32', Float32Array.from(times), [n]),
      [labelInput]: new ort.Tensor('int64', BigInt64Array.from(labels, (v) => BigInt(v)), [n]),
    });
    return outputs[spec.output.name].data;
  };
  const x = await sample({
    velocity,
    noise: toNCHW(noise(seed, size * size * 3), 1, size),
    label,
    nullLabel: spec.sampling.nullLabel,
    steps,
    guidance,
    sampler,
    guidanceInterval,
    onStep: async (i, total, current) => {
      progress.value = i;
      $('generate-time').textContent = `step ${i} of ${total}`;
      draw(current);
      await new Promise((resolve) => requestAnimationFrame(resolve)); // Let the page repaint.
    },
  });
  draw(x);
  const ms = performance.now() - start;
  const name = label === spec.sampling.nullLabel ? 'unconditional' : state.classNames[label];
  const where = guidanceInterval.join(' ≤ t ≤ ');
  $('generate-time').textContent =
    `${name}, seed ${seed}, ${steps} ${sampler} steps, guidance ${guidance} for ${where}: ` +
    `${ms.toFixed(0)} ms (${state.backend.name})`;
  const pixels = Array.from(context.getImageData(0, 0, size, size).data);
  const count = state.generate.count + 1;
  Object.assign(state.generate, { label, seed, steps, guidance, sampler, guidanceInterval, ms, size, pixels, count });
  setState('generated', 'Ready.');
}

// ---- Set-up ----

function setUpClassifier(spec, models) {
  fileChoices($('classifier-file'), [
    ['float32', models.original],
    ['int8', models.quantized],
  ]);
  const photo = $('photo');
  const drop = $('drop');
  const take = (file) => file && classify(file).catch(fail);
  photo.addEventListener('change', () => take(photo.files[0]));
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    take(e.dataTransfer.files[0]);
  });
  $('classifier-note').textContent =
    `${spec.output.classes.length} classes; ${spec.preprocess.description || ''}` +
    (spec.preprocess.fit_size ? '' : ' (this export predates fit_size: the crop is cut from the photo itself)');
}

function setUpGenerator(spec, models, breeds) {
  $('generate').hidden = false;
  fileChoices($('generator-file'), [
    ['float32', models],
    ['int8', models.quantized],
  ]);
  state.classNames = breeds.map((c) => c.name);
  const select = $('label');
  select.replaceChildren(...breeds.map((c) => new Option(c.name, c.index)));
  select.append(new Option('unconditional (null label)', spec.sampling.nullLabel));
  $('steps').value = spec.sampling.steps;
  $('guidance').value = spec.sampling.guidance;
  // The run's sample.* (older models.json: no sampler or guidanceInterval, guidance at every step).
  $('sampler').value = spec.sampling.sampler || (/heun/i.test(spec.sampling.method) ? 'heun' : 'euler');
  [$('guidance-from').value, $('guidance-to').value] = spec.sampling.guidanceInterval || [0, 1];
  const size = generatorSize(spec);
  $('generator-note').textContent = `${size}×${size} px, ${breeds.length} classes (null label ${spec.sampling.nullLabel})`;
  $('generate-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const button = $('generate-button');
    button.disabled = true; // One sample at a time.
    generate()
      .catch(fail)
      .finally(() => (button.disabled = false));
  });
}

async function main() {
  setState('loading', 'Reading models.json…');
  const response = await fetch('models.json');
  if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
  const spec = await response.json();
  state.spec = spec;
  const site = spec.site || {};
  $('runtime').textContent = `onnxruntime-web ${site['onnxruntime-web'] || ort.env.versions?.web || ''}`;
  if (spec.classifier) setUpClassifier(spec.classifier, spec.models.classifier);
  else $('classify').hidden = true;
  if (spec.generator) setUpGenerator(spec.generator, spec.models.generator, spec.generator_breeds.classes);
  const params = new URLSearchParams(location.search);
  const backend = $('backend');
  backend.value = params.get('backend') || 'auto';
  const start = async () => {
    state.backend = await chooseBackend(backend.value);
    showBackend();
    await loadSessions();
  };
  backend.addEventListener('change', () => start().catch(fail));
  for (const id of ['classifier-file', 'generator-file']) $(id).addEventListener('change', () => loadSessions().catch(fail));
  await start();
}

main().catch(fail);
