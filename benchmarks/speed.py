"""`tinycats bench`: measured speed of the library's own train step, kernels and input pipeline (not a test).

    tinycats bench --model resnet18 --batch 32 --image-size 224 --dtype bf16 --steps 10 [--baseline torch] [--profile N]
    tinycats bench --kernels --dtype bf16 [--baseline torch]
    tinycats bench --pipeline --image-size 224
    tinycats bench --epoch configs/cats.py:smoke [--config.FIELD=VALUE ...]
    tinycats bench --quality classifier|small|generator|all [--sweep FIELD=V1,V2 ...] [--judge DIR]  (quality.py)
The train step is the one `train_and_evaluate` runs, made by the same `loop.build` (`TrainStep`: task
loss with its on-device augmentation, optax update, donated state, fed as the loop feeds it), from
`configs/cats.py` or `configs/dit.py` with the sizes given. Compilation is timed apart
(`lower().compile()`); then K steps are timed one by one, each waited for, and the median and spread
reported. FLOPs come from XLA's cost analysis of the compiled step; with a peak (a datasheet table for
common GPUs, or `--peak-tflops`) they give the model-FLOP utilisation. Every result is one JSON line on
stdout, also appended to `--results`.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import tinycats.data
from benchmarks.timing import machine, queued_timings, timings
from tinycats import config as config_lib, sharding
from tinycats.data import augment, cache, pets
from tinycats.errors import UserError
from tinycats.train import loop

MODELS = ('resnet18', 'resnet34', 'dit')
DTYPES = {'bf16': 'bfloat16', 'f32': 'float32'}
# Dense peak TFLOP/s per chip from the vendors' datasheets (not measured here), matched against the
# device kind in this order: bf16 tensor cores, and TF32 for f32 (XLA's default precision for float32
# matmuls and convolutions on these GPUs). The H100 PCIe is slower than the SXM part that the H100 row is.
PEAK_TFLOPS = {
  'H200': {'bf16': 989.0, 'f32': 495.0},
  'H100 PCIe': {'bf16': 756.0, 'f32': 378.0},
  'H100': {'bf16': 989.0, 'f32': 495.0},
  'A100': {'bf16': 312.0, 'f32': 156.0},
  'L40S': {'bf16': 362.0, 'f32': 183.0},
  'L4': {'bf16': 121.0, 'f32': 60.0},
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_config(model: str, batch: int, image_size: int, dtype: str, overrides=()):
  """The recipe's config (configs/cats.py or configs/dit.py) at the benchmark's sizes."""
  if model not in MODELS:
    raise UserError(f'unknown --model {model!r}; choose one of {", ".join(MODELS)}')
  if dtype not in DTYPES:
    raise UserError(f'unknown --dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
  spec = os.path.join(REPO, 'configs', 'dit.py' if model == 'dit' else 'cats.py')
  if not os.path.isfile(spec):
    raise UserError(f'{spec} not found: run `tinycats bench` from a checkout of the repository')
  common = [
    f'--config.train.batch_size={batch}',
    f'--config.data.image_size={image_size}',
    f'--config.model.dtype={DTYPES[dtype]}',
    f'--config.data.cache_size={_cache_size(spec, image_size)}',
  ]
  if model != 'dit':
    common += [f'--config.model.name={model}', '--config.model.pretrained=']
  config = config_lib.load(spec, common + list(overrides))
  config.data.classes = tuple(pets.LABEL_SETS[config.data.labels])
  return config


def _cache_size(spec: str, image_size: int) -> int:
  """The recipe's cache size scaled to `image_size`: its ratio (320/224 for the classifier) to the input."""
  data = config_lib.load_config_file(spec).data
  return round(image_size * data.cache_size / data.image_size)


def _flops(compiled) -> float | None:
  """FLOPs of one step per device, from XLA's cost analysis (None where the backend gives none)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # Not every backend implements it.
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  value = (cost or {}).get('flops')
  return float(value) if value and value > 0 else None


def peak_tflops(device, dtype: str, given: float | None) -> tuple[float | None, str]:
  """(peak TFLOP/s per chip, where it came from)."""
  if given:
    return given, '--peak-tflops'
  kind = getattr(device, 'device_kind', '')
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return peaks[dtype], f'datasheet {name}'
  return None, f'unknown for {kind or device.platform}; pass --peak-tflops'


def mesh_of(devices: int | None):
  """The mesh over the first `devices` devices (default: all); `loop.build` checks the batch against it."""
  available = jax.devices()
  if devices and devices > len(available):
    raise UserError(f'--devices {devices}: only {len(available)} {jax.default_backend()} device(s) here')
  return sharding.make_mesh(available[:devices] if devices else None)


def synthetic_split(config, batch: int) -> tinycats.data.Split:
  """One batch of random uint8 canvases at the config's cache size: what the train step is timed on."""
  if batch < 1:
    raise UserError(f'--batch must be at least 1, got {batch}')
  rng = np.random.default_rng(0)
  side = config.data.cache_size
  return tinycats.data.Split(
    images=rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8),
    labels=rng.integers(0, len(config.data.classes), batch).astype(np.int32),
    names=[f'synthetic{i}' for i in range(batch)],
    skipped=[],
    sizes=np.tile(np.int32([side * 3 // 4, side]), (batch, 1)),  # 4:3 pictures, Oxford-IIIT Pet's commonest.
  )


# Profiler events that are the runtime around the ops, not ops (CPU thunk executor, PjRt, Python).
_RUNTIME_EVENT = re.compile(r'^(\$|end: )|::|\(|^ParseArguments$')


def op_profile(trace_dir: str, steps: int, top: int) -> list[dict]:
  """The `top` op kinds by time per step, from the profiler's trace of `steps` steps.

  A kind is an XLA op or fusion name without its numeric suffix (`ynn_fusion.12` -> `ynn_fusion`).
  Where the trace has device lanes (GPUs), only their events count; on the CPU the ops are host
  events (XLA emits them with `--xla_cpu_enable_xprof_traceme=true`, which `--profile` sets).
  """
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    return []
  with gzip.open(max(files, key=os.path.getmtime)) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  device_pids = {
    e['pid']
    for e in events
    if e.get('ph') == 'M' and e.get('name') == 'process_name' and '/device:' in str(e.get('args', {}).get('name', ''))
  }
  totals, counts = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') != 'X' or not e.get('dur'):
      continue
    name = str(e.get('name', ''))
    if (device_pids and e.get('pid') not in device_pids) or (not device_pids and _RUNTIME_EVENT.search(name)):
      continue
    kind = re.sub(r'\.\d+$', '', name)
    totals[kind] += e['dur']
    counts[kind] += 1
  everything = sum(totals.values()) or 1
  return [
    dict(op=kind, ms_per_step=micros / 1e3 / steps, share=micros / everything, calls_per_step=counts[kind] / steps)
    for kind, micros in totals.most_common(top)
  ]


def train_step(
  model: str,
  batch: int,
  image_size: int,
  dtype: str = 'bf16',
  steps: int = 10,
  devices: int | None = None,
  peak: float | None = None,
  overrides=(),
  profile: int = 0,
) -> dict:
  """Times the library's jitted train step on a synthetic uint8 batch (compile apart).

  `profile` > 0 then traces 2 more steps with the JAX profiler and adds the top `profile` op kinds.
  """
  if steps < 1:
    raise UserError(f'--steps must be at least 1, got {steps}')
  config = bench_config(model, batch, image_size, dtype, overrides)
  accum = config.train.get('grad_accum', 1)
  mesh = mesh_of(devices)
  setup = loop.build(config, mesh, synthetic_split(config, batch))
  state = setup.state
  params = sum(x.size for x in jax.tree.leaves(state[0].filter(setup.task.trainable)))  # Not the DiT's EMA copy.
  available = jax.devices()
  data, resident = setup.feed(0)  # The loop's form of a batch: rows of the split kept on the devices if it fits.
  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = setup.train_step.lower(state, data, key, 0, resident).compile()
  compile_seconds = time.perf_counter() - start
  state, out = compiled(state, data, key, np.int32(0), resident)  # A first run (allocations) is not timed.
  jax.block_until_ready(out)
  seconds = []
  for i in range(1, steps + 1):
    start = time.perf_counter()
    state, out = compiled(state, data, key, np.int32(i), resident)
    jax.block_until_ready(out)
    seconds.append(time.perf_counter() - start)
  loss = float(out['loss'])
  result = dict(
    kind='train_step',
    framework='jax',
    model=model,
    batch=batch,
    image_size=image_size,
    dtype=dtype,
    steps=steps,
    devices=mesh.size,
    parameters=int(params),
    compile_seconds=compile_seconds,
    **timings(seconds),
    last_loss=loss,
  )
  result['images_per_sec'] = batch / (result['step_ms_median'] / 1e3)
  stats = available[0].memory_stats() if hasattr(available[0], 'memory_stats') else None
  result['peak_memory_bytes'] = (stats or {}).get('peak_bytes_in_use')  # The process's peak so far.
  try:  # What XLA planned for this step on one device: arguments, outputs and temporaries.
    planned = compiled.memory_analysis()
    result['step_memory_bytes'] = int(
      planned.argument_size_in_bytes
      + planned.output_size_in_bytes
      + planned.temp_size_in_bytes
      - planned.alias_size_in_bytes
    )
  except Exception:  # pylint: disable=broad-except  # Not every backend has it.
    result['step_memory_bytes'] = None
  # With accumulation the step is a scan, whose body XLA's cost analysis counts once: no FLOP figures then.
  flops = _flops(compiled) if accum == 1 else None
  result.update(
    flops_per_step_per_device=flops,
    achieved_tflops_per_device=None,
    peak_tflops_per_device=None,
    peak_source=None,
    mfu=None,
  )
  if flops:
    achieved = flops / (result['step_ms_median'] / 1e3)
    result['achieved_tflops_per_device'] = achieved / 1e12
    chip_peak, source = peak_tflops(available[0], dtype, peak)
    result['peak_tflops_per_device'], result['peak_source'] = chip_peak, source
    result['mfu'] = achieved / (chip_peak * 1e12) if chip_peak else None
  if not np.isfinite(loss):
    raise UserError(f'the benchmark step produced loss {loss}; the figures would be meaningless')
  if profile:
    with tempfile.TemporaryDirectory(prefix='tinycats-profile-') as trace_dir:
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for i in range(2):
          state, out = compiled(state, data, key, np.int32(steps + 1 + i), resident)
        jax.block_until_ready(out)
      result['profile'] = op_profile(trace_dir, steps=2, top=profile)
  return dict(result, **machine())


def epoch(spec: str, overrides=(), devices: int | None = None) -> dict:
  """One full training epoch of a classifier config on its real data: the loop's `build`, batches and step.

  Wall time with and without the first step's compilation; `build` (the model, and the copy of a split
  that fits to the devices) is timed apart, and validation and checkpoints are not part of an epoch here
  (they are in `train_and_evaluate`). The weights are random: pretrained ones would not change the time.
  """
  config = config_lib.load(spec, list(overrides))
  batch = config.train.batch_size
  mesh = mesh_of(devices)
  start = time.perf_counter()
  data = tinycats.data.load(config, splits=('train',))
  load_seconds = time.perf_counter() - start
  config.data.classes = tuple(data.classes)
  train = data.splits['train']
  steps = len(train) // batch if batch > 0 else 0
  if steps < 2:
    raise UserError(f'{len(train)} training images make {steps} batch(es) of {batch}: too few to time an epoch')
  start = time.perf_counter()
  setup = loop.build(config, mesh, train)
  build_seconds = time.perf_counter() - start
  state, key = setup.state, jax.random.key(config.seed)
  start = time.perf_counter()
  for i in range(steps):
    rows, resident = setup.feed(i)
    state, out = setup.train_step(state, rows, key, i, resident)
    if i == 0:
      jax.block_until_ready(out)
      first = time.perf_counter() - start
  jax.block_until_ready(out)
  total = time.perf_counter() - start
  return dict(
    kind='epoch',
    config=spec,
    overrides=list(overrides),
    images=steps * batch,
    steps=steps,
    batch=batch,
    image_size=config.data.image_size,
    model=config.model.name,
    data_load_seconds=load_seconds,
    build_seconds=build_seconds,
    epoch_seconds_with_compile=total,
    first_step_seconds=first,
    epoch_seconds_after_compile=total - first,
    images_per_sec_after_compile=(steps - 1) * batch / (total - first),
    last_loss=float(out['loss']),
    data_on_device=setup.feed.resident is not None,
    devices=mesh.size,
    **machine(),
  )


def kernel_shapes(batch: int) -> dict[str, tuple[str, tuple[int, ...]]]:
  """The kernels that dominate the two recipes' steps, at `batch` images: name -> (op, shape).

  From configs/dit.py and configs/cats.py: the DiT's MLP matmul (its tokens at 128 px x width ->
  hidden; 64 x 384 -> 1536 per image) and a 3x3 convolution of the ResNet's first stage at 224 px
  (56 x 56, 64 -> 64 channels).
  """
  dit = bench_config('dit', batch, 128, 'f32').model
  tokens = (128 // dit.patch_size) ** 2
  width = bench_config('resnet18', batch, 224, 'f32').model.width
  return {
    'dit_mlp_matmul': ('matmul', (batch * tokens, dit.width, int(dit.width * dit.mlp_ratio))),
    'resnet_conv3x3': ('conv', (batch, 224 // 4, width, width)),
  }


def kernel_flops(op: str, shape: tuple[int, ...]) -> float:
  """Multiply-adds x 2 of one call of a `kernel_shapes` entry (the 3x3 convolution is 'SAME', stride 1)."""
  if op == 'matmul':
    m, k, n = shape
    return 2.0 * m * k * n
  b, side, cin, cout = shape
  return 2.0 * b * side * side * cin * cout * 9


def kernels(batch: int = 32, dtype: str = 'bf16', steps: int = 10) -> list[dict]:
  """XLA's matmul and 3x3 convolution alone (forward), in GFLOP/s: whether a slow step is the kernels' doing.

  Inputs are in `dtype` and so is the output (what the models' layers do under the dtype policy).
  """
  if dtype not in DTYPES:
    raise UserError(f'unknown --dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
  element = jnp.dtype(DTYPES[dtype])
  rows = []
  for name, (op, shape) in kernel_shapes(batch).items():
    if op == 'matmul':
      m, k, n = shape
      args = (jnp.ones((m, k), element), jnp.ones((k, n), element))
      fn = jax.jit(lambda a, b: a @ b)
    else:
      b, side, cin, cout = shape
      args = (jnp.ones((b, side, side, cin), element), jnp.ones((3, 3, cin, cout), element))
      fn = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      )
    timing = queued_timings(lambda: fn(*args), jax.block_until_ready, steps)
    rows.append(
      dict(
        kind='kernel',
        framework='jax',
        name=name,
        op=op,
        shape=list(shape),
        dtype=dtype,
        steps=steps,
        **timing,
        gflops_per_sec=kernel_flops(op, shape) / timing['step_ms_median'] / 1e6,
        **machine(),
      )
    )
  return rows


def pipeline(
  image_size: int = 224, images: int = 256, batch: int = 64, steps: int = 10, source_size: tuple[int, int] = (500, 375)
) -> list[dict]:
  """The input pipeline alone: JPEG decode into the cache, and cached batches through on-device augmentation."""
  side = _cache_size(os.path.join(REPO, 'configs', 'cats.py'), image_size)
  rng = np.random.default_rng(0)
  out = []
  with tempfile.TemporaryDirectory(prefix='tinycats-bench-') as tmp:
    paths = []
    w, h = source_size
    for i in range(images):  # Smooth random pictures at Oxford-IIIT Pet's typical size, JPEG quality 90.
      small = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
      picture = Image.fromarray(small).resize((w, h), Image.BILINEAR)
      paths.append(os.path.join(tmp, f'{i}.jpg'))
      picture.save(paths[-1], quality=90)
    loaders = [lambda p=p: (cache.read_image_file(p, side), {'label': 0}) for p in paths]
    start = time.perf_counter()
    cached = cache.build(
      os.path.join(tmp, 'cache'), [str(i) for i in range(images)], loaders, {'size': side, 'split': 'bench'}
    )
    decode_seconds = time.perf_counter() - start
    out.append(
      dict(
        kind='pipeline',
        stage='jpeg_decode_to_cache',
        images=images,
        source_size=list(source_size),
        cache_size=side,
        seconds=decode_seconds,
        images_per_sec=images / decode_seconds,
        **machine(),
      )
    )
    canvases, sizes = np.array(cached.images), cached.sizes  # A copy: the memory-mapped file goes with the folder.
    del cached
  mesh = sharding.make_mesh()
  batch = min(batch, images) // mesh.size * mesh.size
  if not batch:
    raise UserError(f'--batch must be at least the device count ({mesh.size})')
  augment_fn = lambda b, key: augment.train_transform(
    b['image'], b['size'], key, image_size=image_size, color_jitter=0.2
  )
  host_step = jax.jit(augment_fn)
  device_step = jax.jit(lambda split, rows, key: augment_fn(jax.tree.map(lambda field: field[rows], split), key))
  everywhere = sharding.replicated(mesh)  # What `feed.Feed` keeps on the devices:
  resident = {'image': sharding.global_array(canvases, everywhere), 'size': sharding.global_array(sizes, everywhere)}
  key = jax.random.key(0)

  def transfer_only(i):  # What the device cache saves each step: the host gather and the copy to the devices.
    chosen = np.sort(rng.permutation(images)[:batch])
    return sharding.shard_batch({'image': canvases[chosen], 'size': sizes[chosen]}, mesh)

  def from_host(i):  # The loop's path for a split too big for the devices: host gather, then transfer.
    return host_step(transfer_only(i), jax.random.fold_in(key, i))

  def on_device(i):  # The loop's path for a split that fits: only the row indices are sent.
    rows = sharding.shard_batch({'index': np.sort(rng.permutation(images)[:batch]).astype(np.int32)}, mesh)['index']
    return device_step(resident, rows, jax.random.fold_in(key, i))

  for stage, one in (
    ('host_gather_and_transfer', transfer_only),
    ('cache_to_augmented_device_batch', from_host),
    ('device_cache_to_augmented_batch', on_device),
  ):
    jax.block_until_ready(one(0))  # Compile.
    start = time.perf_counter()
    for i in range(1, steps + 1):
      jax.block_until_ready(one(i))
    seconds = time.perf_counter() - start
    out.append(
      dict(
        kind='pipeline',
        stage=stage,
        batch=batch,
        steps=steps,
        image_size=image_size,
        cache_size=side,
        seconds=seconds,
        images_per_sec=batch * steps / seconds,
        **machine(),
      )
    )
  return out
