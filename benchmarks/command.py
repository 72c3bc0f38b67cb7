"""`tinycats bench`: the flags it takes (`add_parser`) and the benchmark they pick (`run`).

tinycats' CLI adds this subcommand by importing this module, which imports nothing heavy: JAX and the
benchmarks load inside `run`, so `tinycats --help` stays fast.
"""

from __future__ import annotations

import os

QUALITY_FLAGS = ('--sweep', '--judge', '--judge-set', '--data-seed', '--per-class', '--picture-size')


def add_parser(subparsers, formatter_class=None):
  """Adds `bench` to the CLI's subparsers; returns its parser."""
  p = subparsers.add_parser(
    'bench',
    help='time the train step (optionally beside plain PyTorch) or the input pipeline, '
    'or train the recipes on shape data (--quality)',
    description='Also takes --config.FIELD=VALUE for any field of the recipe, e.g. --config.model.width=8 (with '
    '--quality, given to each recipe that has the field).',
  )
  if formatter_class is not None:
    p.formatter_class = formatter_class
  _speed_flags(p)
  _quality_flags(p)
  _judge_flags(p)
  p.add_argument(
    '--results',
    default='',
    metavar='FILE',
    help='also append each JSON line to FILE (default: stdout only; the project records its own figures with '
    '--results benchmarks/results.jsonl)',
  )
  p.set_defaults(fn=run, takes_overrides=True)
  return p


def _speed_flags(p) -> None:
  p.add_argument('--model', choices=('resnet18', 'resnet34', 'dit'), default='resnet18')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--image-size', type=int, default=None, help='default 224 (ResNets), 128 (DiT)')
  p.add_argument('--dtype', choices=('bf16', 'f32'), default='bf16', help='compute dtype (parameters are float32)')
  p.add_argument('--steps', type=int, default=10, help='timed steps after compilation and one untimed run')
  p.add_argument('--devices', type=int, default=None, help='use the first D devices (default: all)')
  p.add_argument('--peak-tflops', type=float, default=None, help="the device's peak, for the FLOP utilisation")
  p.add_argument('--baseline', choices=('torch',), default=None, help='also time the same step in plain PyTorch')
  p.add_argument('--pipeline', action='store_true', help='time the input pipeline instead of the train step')
  p.add_argument(
    '--profile',
    type=int,
    default=0,
    metavar='N',
    help='also trace 2 train steps with the JAX profiler and report the N op kinds that take longest',
  )
  p.add_argument(
    '--kernels',
    action='store_true',
    help="time the models' main matmul and convolution alone (GFLOP/s), with --baseline torch beside them",
  )
  p.add_argument(
    '--epoch',
    default=None,
    metavar='CONFIG',
    help='time one full training epoch of this config on its data, e.g. configs/cats.py:smoke',
  )


def _quality_flags(p) -> None:
  p.add_argument(
    '--quality',
    choices=('classifier', 'small', 'generator', 'generator128', 'all'),
    default=None,
    help='train the smoke recipes from scratch on shape-labelled pictures and report accuracy '
    '(generator: judged by a trained classifier, with diversity; generator128: the same at 128 px) with times; '
    'all: classifier, small and generator (not the costlier generator128)',
  )
  p.add_argument(
    '--sweep',
    nargs='+',
    default=[],
    metavar='FIELD=V1,V2',
    help='--quality: one run per point of this grid, e.g. --sweep learning_rate=1e-3,3e-3 epochs=3,6 '
    '(a name without a dot is a train field)',
  )
  p.add_argument(
    '--per-class', type=int, default=None, help='--quality: pictures written per class (default 300 for every case)'
  )
  p.add_argument('--classes', type=int, default=10, help='--quality classifier/generator*: how many shapes (2-10)')
  p.add_argument(
    '--picture-size',
    type=int,
    default=None,
    help="--quality: the pictures' mean side in pixels (default: 48 classifier and generator, 64 small, "
    '160 generator128)',
  )
  p.add_argument(
    '--data-seed',
    type=int,
    default=0,
    help='--quality: the seed of the pictures (another seed: pictures the recipes were not tuned on)',
  )
  p.add_argument(
    '--workdir',
    default='workdirs/quality',
    help='--quality: where the data folders (reused) and one workdir per run go',
  )


def _judge_flags(p) -> None:
  p.add_argument(
    '--judge',
    default=None,
    metavar='DIR',
    help="--quality generator*: a trained judge's workdir to reuse (a row's judge_workdir, of the same case)",
  )
  p.add_argument(
    '--judge-set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help="--quality generator*: an override for the judge's recipe (repeatable)",
  )
  p.add_argument(
    '--samples-per-class', type=int, default=50, help='--quality generator*: samples of each class the judge scores'
  )


def run(args) -> int:
  """`tinycats bench`: refuses flags that do not go together, then runs the one benchmark they name."""
  _check_flags(args)
  results = args.results or None
  if args.quality:
    return _quality(args, results)
  if args.kernels:
    return _kernels(args, results)
  if args.epoch:
    from benchmarks import speed, timing

    timing.emit(speed.epoch(args.epoch, args.overrides, args.devices), results)
    return 0
  if args.pipeline:
    from benchmarks import speed, timing

    for row in speed.pipeline(image_size=args.image_size or 224, batch=args.batch, steps=args.steps):
      timing.emit(row, results)
    return 0
  return _train_step(args, results)


def _check_flags(args) -> None:
  """One benchmark at a time, and only the flags it reads."""
  from tinycats.errors import UserError

  if sum(map(bool, (args.epoch, args.pipeline, args.kernels, args.quality))) > 1:
    raise UserError('--epoch, --pipeline, --kernels and --quality are separate benchmarks: run one at a time')
  if args.quality:
    if args.profile or args.baseline:
      raise UserError('--profile and --baseline are for the train step and kernels: drop them with --quality')
    return
  values = (args.sweep, args.judge, args.judge_set, args.data_seed, args.per_class, args.picture_size)
  if given := [flag for flag, value in zip(QUALITY_FLAGS, values, strict=True) if value]:
    raise UserError(f'{", ".join(given)}: only with --quality')
  if args.profile and (args.epoch or args.pipeline or args.kernels):
    raise UserError('--profile traces the train step: drop --epoch/--pipeline/--kernels')
  if (args.epoch or args.pipeline) and args.baseline:
    raise UserError('--baseline torch compares train steps and kernels: drop --epoch/--pipeline')


def _quality(args, results: str | None) -> int:
  from benchmarks import quality, timing

  rows = quality.run(
    args.quality,
    workdir=args.workdir,
    per_class=args.per_class,
    classes=args.classes,
    picture_size=args.picture_size,
    overrides=args.overrides,
    sweep=args.sweep,
    judge=args.judge,
    judge_overrides=args.judge_set,
    samples_per_class=args.samples_per_class,
    emit=lambda row: timing.emit(row, results),
    data_seed=args.data_seed,
  )
  quality.print_table(rows)
  return 0


def _kernels(args, results: str | None) -> int:
  """JAX's kernels, and with `--baseline torch` PyTorch's beside them, each pair compared."""
  import jax

  from benchmarks import speed, timing, torch_baseline

  rows = speed.kernels(args.batch, args.dtype, args.steps)
  for row in rows:
    timing.emit(row, results)
  if args.baseline != 'torch':
    return 0
  ok, why = torch_baseline.available(jax.default_backend(), 1)
  if not ok:
    timing.emit({'kind': 'kernel', 'framework': 'torch', 'skipped': why}, results)
    return 0
  torch_rows = torch_baseline.kernels(args.batch, args.dtype, args.steps, jax.default_backend())
  for jax_row, torch_row in zip(rows, torch_rows, strict=True):
    timing.emit({**timing.machine(), **torch_row}, results)
    ratio = jax_row['gflops_per_sec'] / torch_row['gflops_per_sec']
    comparison = dict(name=jax_row['name'], dtype=args.dtype, jax_over_torch=ratio)
    comparison.update(jax_gflops_per_sec=jax_row['gflops_per_sec'], torch_gflops_per_sec=torch_row['gflops_per_sec'])
    timing.emit({**timing.machine(), 'kind': 'comparison', **comparison}, results)
  return 0


def _train_step(args, results: str | None) -> int:
  """The library's train step, and with `--baseline torch` the same step in PyTorch, compared."""
  import jax

  from benchmarks import speed, timing, torch_baseline

  size = args.image_size or (128 if args.model == 'dit' else 224)
  if args.profile:  # Read when the backend starts: XLA:CPU then names each op in the trace.
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_xprof_traceme=true').strip()
  sizes = (args.model, args.batch, size, args.dtype)
  jax_row = speed.train_step(*sizes, args.steps, args.devices, args.peak_tflops, args.overrides, profile=args.profile)
  timing.emit(jax_row, results)
  if args.baseline != 'torch':
    return 0
  ok, why = torch_baseline.available(jax.default_backend(), jax_row['devices'])
  if not ok:
    timing.emit({'kind': 'train_step', 'framework': 'torch', 'skipped': why}, results)
    return 0
  config = speed.bench_config(*sizes, args.overrides)  # `a.b=value`, as config.apply_overrides takes them.
  torch_row = torch_baseline.train_step(*sizes, args.steps, config, jax.default_backend())
  timing.emit({**timing.machine(), **torch_row}, results)
  comparison = dict(model=args.model, batch=args.batch, image_size=size, dtype=args.dtype)
  comparison.update(jax_images_per_sec=jax_row['images_per_sec'], torch_images_per_sec=torch_row['images_per_sec'])
  comparison['jax_over_torch'] = jax_row['images_per_sec'] / torch_row['images_per_sec']
  timing.emit({**timing.machine(), 'kind': 'comparison', **comparison}, results)
  return 0
