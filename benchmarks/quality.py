"""`tinycats bench --quality`: the smoke recipes trained from scratch on pictures whose labels only shape carries.

    tinycats bench --quality classifier|small|generator|generator128|all [--per-class N] [--config.FIELD=VALUE ...]
                   [--sweep FIELD=V1,V2 ...] [--judge DIR] [--workdir DIR] [--results PATH]

Every run takes the library's own path: `config.load(recipe, overrides)` with `data.source=folder`,
`train.loop.train_and_evaluate`, and for the generator `evaluate.evaluate(..., classifier=JUDGE)`.
The pictures come from `tinycats.data.shapes` (colour, ground, clutter, position, scale and aspect
ratio random per image): nothing but the outline tells the class.

- `classifier`: `configs/cats.py:smoke` from scratch on 10 shapes (`shapes.EASY`, 300 per class; `style='HARD'`
  for the harder pictures, which the smoke's 1,000 steps do not learn).
- `small`: the same recipe on two classes, `shapes.PETS` (cat and dog heads that differ only in their
  ears, `shapes.HARD`), 300 per class: 252 train, 60 validate and 288 test, 2,000 steps (`SMALL_SPLIT`).
- `generator`: `configs/dit.py:smoke` on 10 shapes (`shapes.CENTRED`, 300 per class), judged by a classifier
  (`configs/cats.py:smoke` from scratch, longer: `JUDGE_OVERRIDES`) trained on a copy of the same folder
  as the generator sees it (`generator_view`), with the generator's own train/val/test partition, so
  the real images the judge scores are ones it never trained on. `--judge DIR` reuses a trained judge.
  Beside conditional accuracy (and its worst class) the row gives diversity: per class, the mean pairwise
  distance of the samples over that of the real pictures, in the judge's features (`evaluators.samples`).
- `generator128`: the same at the real recipe's 128 px: the ten `shapes.CENTRED` shapes drawn at 160 px
  (`GENERATOR128_PICTURE_SIZE`), `configs/dit.py:smoke128` (the smoke DiT at the real recipe's 128 px, patch
  16: 64 tokens, as at 32 px with patch 4, and its block and sampling), judged by the same judge recipe trained on
  the 128 px view (it reads them at its own 96 px input). 16 times the pixels to draw, cache and crop as
  at 32 px, so `all` leaves it out (`all` is classifier, small and generator).

Each run is one JSON line (`kind: quality`) with its figures, its wall time and the loop's
train/compile seconds. `--sweep` trains a case once per point of a grid (one line per point).
Workdirs (one per run, never reused) and the data folders (reused) go under `--workdir`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

import tinycats.data
from benchmarks import timing
from tinycats import config as config_lib, evaluate, stored_config
from tinycats.data import augment, cache, folder as folder_lib, shapes
from tinycats.errors import UserError
from tinycats.train import loop

CASES = ('classifier', 'small', 'generator', 'generator128')
ALL = ('classifier', 'small', 'generator')  # `--quality all`: not generator128, the costliest.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFIER_RECIPE = 'configs/cats.py:smoke'
GENERATOR_RECIPE = 'configs/dit.py:smoke'
# The generator's pictures: one large object near the middle (`shapes.CENTRED`), as pets are photographed;
# on `shapes.EASY` (small objects anywhere) the smoke DiT stays near chance (BENCHMARKS.md).
GENERATOR_STYLE = 'CENTRED'
PER_CLASS = {'classifier': 300, 'small': 300, 'generator': 300, 'generator128': 300}
# `small`: of 300 per class, 30 validate, 144 test and 126 train (252 in all): a test set large enough to
# tell 0.85 from 0.8, the training set as small as the case. Twice the smoke's 1,000 steps: from 252
# pictures the smoke's own budget stops at 0.82 test accuracy, still improving (BENCHMARKS.md).
SMALL_SPLIT = ('data.test_fraction=0.48', 'train.steps=2000')
# `generator128`: the smoke DiT at the real recipe's 128 px, patch 16 (64 tokens, as at 32 px with patch 4), block,
# time distribution and sampling.
GENERATOR128_RECIPE = 'configs/dit.py:smoke128'
# Its pictures' mean side: the 32 px case draws 48 px pictures for a 44 px cache (CENTRED's size); 160 px for
# the 144 px cache keeps the same ratio, so the cache shrinks nearly every picture and enlarges none by much.
GENERATOR128_PICTURE_SIZE = 160
RECIPES = {
  'classifier': CLASSIFIER_RECIPE,
  'small': CLASSIFIER_RECIPE,
  'generator': GENERATOR_RECIPE,
  'generator128': GENERATOR128_RECIPE,
}
# The judge: the classifier smoke recipe from scratch, on every image (no max_examples cap) and for longer.
JUDGE_OVERRIDES = ('model.pretrained=', 'data.max_examples=0', 'train.steps=2000')
# The generator's partition, given to the judge so that both hold out the same test images.
_PARTITION = ('val_fraction', 'val_min_per_class', 'test_fraction', 'split_seed')


def _spec(recipe: str) -> str:
  path, _, arg = recipe.partition(':')
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise UserError(f'{full} not found: run `tinycats bench --quality` from a checkout of the repository')
  return full + (f':{arg}' if arg else '')


def _field(item: str) -> str:
  return config_lib.parse_override(item)[0]


def _has(config, field: str) -> bool:
  node = config
  for part in field.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False
    node = node[part]
  return True


def _check_known(overrides: Iterable[str], recipes: Sequence[str]) -> None:
  """Every override names a field of at least one of `recipes` (the config loader's error otherwise)."""
  bases = [config_lib.load_config_file(_spec(r)) for r in recipes]
  for item in overrides:
    if not any(_has(base, _field(item)) for base in bases):
      config_lib.apply_overrides(bases[0], [item])  # Raises, naming the field and the closest one.


def _for(config_file, overrides: Iterable[str]) -> list[str]:
  """The overrides whose field this recipe has: `--config.*` with several recipes applies to each where it can."""
  return [item for item in overrides if _has(config_file, _field(item))]


def load_config(recipe: str, folder: str, overrides: Iterable[str] = ()):
  """`recipe` on the image folder, with the overrides (`FIELD=VALUE`) that its fields take."""
  spec = _spec(recipe)
  chosen = _for(config_lib.load_config_file(spec), overrides)
  return config_lib.load(
    spec,
    ['--config.data.source=folder', f'--config.data.folder={folder}']
    + ['--config.{}={}'.format(*config_lib.parse_override(i)) for i in chosen],
  ), chosen


# Data ----------------------------------------------------------------------------------------------------------


def data_folder(
  root: str, classes: Sequence[str], per_class: int, style_name: str, picture_size: int | None, seed: int = 0
) -> tuple[str, float]:
  """(folder, seconds spent writing it): `shapes.make_folder`'s pictures under `root`, reused when complete."""
  style = {'HARD': shapes.HARD, 'EASY': shapes.EASY, 'CENTRED': shapes.CENTRED}[style_name]
  if picture_size:
    style = dataclasses.replace(style, size=picture_size)
  spec = dict(
    classes=list(classes), per_class=per_class, style=dataclasses.asdict(style), style_name=style_name, seed=seed
  )
  name = f'{style_name.lower()}-{len(classes)}x{per_class}-{style.size}px-seed{seed}-{_digest(spec)}'
  folder = os.path.join(root, 'data', name)
  done = os.path.join(folder, 'bench.json')
  if os.path.isfile(done):
    return folder, 0.0
  start = time.perf_counter()
  shapes.make_folder(folder, classes, per_class, style, seed)
  _write_json(spec, done)  # Last: a folder without it is written again.
  return folder, time.perf_counter() - start


def picture_side(style_name: str, picture_size: int | None) -> int:
  """The pictures' mean side in pixels: `picture_size`, else the style's own."""
  return picture_size or getattr(shapes, style_name).size


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _write_json(obj, path: str) -> None:
  with open(f'{path}.tmp', 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(f'{path}.tmp', path)


def view_folder(folder: str, data) -> str:
  """Where `generator_view` writes the copy of `folder` for a generator's `data` settings."""
  return f'{folder}-as-{data.image_size}px-{data.cache_size}-crop{augment.eval_crop(data):g}'


def generator_view(folder: str, out: str, data, batch: int = 256) -> str:
  """Writes `out/<class>/<name>.png`: each picture of `folder` as the generator trains on it, unflipped.

  The cache's resize (`cache.fit` to `data.cache_size`), then the generator's crop (`augment.eval_transform`:
  the central square of `data.eval_crop` x the shorter side, resized to `data.image_size`), as
  `evaluators.samples.real_images` shows a judge the real images. Reused when complete.
  """
  done = os.path.join(out, 'bench.json')
  spec = dict(
    source=os.path.abspath(folder),
    cache_size=data.cache_size,
    image_size=data.image_size,
    eval_crop=augment.eval_crop(data),
  )
  if os.path.isfile(done):
    with open(done) as f:
      if json.load(f) == spec:
        return out
  classes, files, _ = folder_lib.list_images(folder)
  for name in classes:
    os.makedirs(os.path.join(out, name), exist_ok=True)
  for start in range(0, len(files), batch):
    chunk = files[start : start + batch]
    canvases, sizes = zip(*(cache.fit(cache.read_image_file(path, data.cache_size), data.cache_size) for path in chunk))
    x = augment.eval_transform(
      np.stack(canvases),
      np.asarray(sizes, np.int32),
      image_size=data.image_size,
      crop_fraction=augment.eval_crop(data),
      norm='none',
    )
    for path, pixels in zip(chunk, augment.to_uint8(x, 'none')):
      relative = os.path.splitext(os.path.relpath(path, folder))[0] + '.png'  # Same names: same partition.
      Image.fromarray(pixels).save(os.path.join(out, relative))
  _write_json(spec, done)
  return out


# Runs ----------------------------------------------------------------------------------------------------------


def _run_dir(workdir: str, case: str, label: str) -> str:
  """A fresh workdir for one run: `train_and_evaluate` would resume from an existing one."""
  parent = os.path.join(workdir, case)
  os.makedirs(parent, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  slug = re.sub(r'[^A-Za-z0-9.=_-]+', '_', label)[:80]
  return tempfile.mkdtemp(prefix=f'{stamp}{"-" + slug if slug else ""}-', dir=parent)


def _load(config, splits=('train', 'val', 'test')):
  """The run's splits again, from the cache it built (its warnings about the data were given already)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    return tinycats.data.load(config, splits=splits)


def _examples(config) -> dict[str, int]:
  """Images in each split as the run used them."""
  return {name: len(split) for name, split in _load(config).splits.items()}


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _train(config, run_dir: str) -> tuple[dict, dict, float]:
  """(summary.json, the test split's eval.json, wall seconds of the training and its test evaluation)."""
  start = time.perf_counter()
  summary = loop.train_and_evaluate(config, run_dir)
  return summary, _read_json(os.path.join(run_dir, 'eval.json')), time.perf_counter() - start


def _training_fields(summary: dict, seconds: float) -> dict:
  return dict(
    steps=summary['steps'],
    total_steps=summary['total_steps'],
    best_step=summary['best_step'],
    stopped_early=summary['stopped_early'],
    train_seconds=summary['train_seconds'],
    compile_seconds=summary['compile_seconds'],
    images_per_sec=summary['images_per_sec'],
    run_seconds=seconds,
  )


def _classify(
  case: str,
  workdir: str,
  classes: Sequence[str],
  per_class: int,
  picture_size: int | None,
  overrides: Sequence[str],
  label: str,
  seed: int,
  style: str,
) -> dict:
  start = time.perf_counter()
  folder, data_seconds = data_folder(workdir, classes, per_class, style, picture_size, seed)
  config, applied = load_config(CLASSIFIER_RECIPE, folder, ['model.pretrained=', *overrides])
  run_dir = _run_dir(workdir, case, label)
  summary, report, seconds = _train(config, run_dir)
  return dict(
    kind='quality',
    case=case,
    recipe=CLASSIFIER_RECIPE,
    overrides=applied,
    classes=report['classes'],
    per_class=per_class,
    style=style,
    picture_size=picture_side(style, picture_size),
    examples=_examples(config),
    test_accuracy=report['accuracy'],
    test_balanced_accuracy=report['balanced_accuracy'],
    test_recall=report['recall'],
    degenerate=report.get('degenerate'),
    **_training_fields(summary, seconds),
    data_seconds=data_seconds,
    wall_seconds=time.perf_counter() - start,
    workdir=run_dir,
  )


def classifier(
  workdir: str,
  per_class: int = PER_CLASS['classifier'],
  classes: int = 10,
  picture_size: int | None = None,
  overrides: Sequence[str] = (),
  label: str = '',
  seed: int = 0,
  style: str = 'EASY',
) -> dict:
  """Case 1: `configs/cats.py:smoke` from scratch on `classes` shapes (`shapes.EASY`): test accuracy and more."""
  return _classify(
    'classifier', workdir, shapes.SHAPES[:classes], per_class, picture_size, overrides, label, seed, style
  )


def small(
  workdir: str,
  per_class: int = PER_CLASS['small'],
  picture_size: int | None = None,
  overrides: Sequence[str] = (),
  label: str = '',
  seed: int = 0,
) -> dict:
  """Case 2: the same recipe, 2,000 steps, on cat and dog heads (`shapes.PETS`, HARD), about 250 training images."""
  return _classify(
    'small', workdir, shapes.PETS, per_class, picture_size, [*SMALL_SPLIT, *overrides], label, seed, 'HARD'
  )


def _judge(
  workdir: str, folder: str, dit_config, classes: list[str], given: str | None, overrides: Sequence[str]
) -> dict:
  """The judge's figures (its workdir, whether reused, test accuracy, seconds); trained unless `given`."""
  start = time.perf_counter()
  if given:
    summary_path = os.path.join(given, 'summary.json')
    if not os.path.isfile(summary_path):
      raise UserError(
        f'--judge {given}: no summary.json there; give the workdir of a finished classifier run '
        '(a row of an earlier `--quality generator` names it as judge_workdir)'
      )
    config = stored_config.load_json(os.path.join(given, 'config.json'))
    if config.get('task') != 'classifier':
      raise UserError(f'--judge {given} holds a {config.get("task")!r} run; the judge must be a classifier')
    if list(config['data']['classes']) != list(classes):
      raise UserError(
        f'--judge {given} tells {config["data"]["classes"]} apart, the generator learns {classes}; '
        'give a judge trained on the same classes, or none (one is trained)'
      )
    summary, seconds, run_dir, applied = _read_json(summary_path), 0.0, given, None
  else:
    d = dit_config.data
    view = generator_view(folder, view_folder(folder, d), d)
    partition = [f'data.{name}={d[name]}' for name in _PARTITION if name in d]  # Before the user's: theirs win.
    config, applied = load_config(CLASSIFIER_RECIPE, view, [*JUDGE_OVERRIDES, *partition, *overrides])
    run_dir = _run_dir(workdir, 'judge', '')
    summary, _, seconds = _train(config, run_dir)
  test = os.path.join(run_dir, 'eval.json')  # The test split's, unless `tinycats evaluate` since wrote another.
  degenerate = _read_json(test).get('degenerate') if os.path.isfile(test) else None
  return dict(
    judge_workdir=os.path.abspath(run_dir),
    judge_reused=bool(given),
    judge_recipe=CLASSIFIER_RECIPE,
    judge_overrides=applied,
    judge_test_accuracy=summary.get('test_accuracy'),
    judge_test_balanced_accuracy=summary.get('test_balanced_accuracy'),
    judge_degenerate=degenerate,
    judge_steps=summary.get('steps'),
    judge_train_seconds=summary.get('train_seconds'),
    judge_compile_seconds=summary.get('compile_seconds'),
    judge_run_seconds=seconds,
    judge_seconds=time.perf_counter() - start,
  )


def _held_out(judge_dir: str, folder: str, dit_config) -> bool | None:
  """Whether none of the generator's test images is among the judge's training or validation images;
  None (not known) for a judge trained on another folder than this data's `view_folder`."""
  judge_config = stored_config.load_json(os.path.join(judge_dir, 'config.json'))
  if os.path.abspath(judge_config.data.folder) != os.path.abspath(view_folder(folder, dit_config.data)):
    return None
  judge = _load(judge_config, splits=('train', 'val'))
  seen = {os.path.splitext(n)[0] for split in judge.splits.values() for n in split.names}
  test = _load(dit_config, splits=('test',)).splits['test'].names
  return not any(os.path.splitext(n)[0] in seen for n in test)


def generator(
  workdir: str,
  per_class: int = PER_CLASS['generator'],
  classes: int = 10,
  picture_size: int | None = None,
  overrides: Sequence[str] = (),
  judge: str | None = None,
  judge_overrides: Sequence[str] = (),
  samples_per_class: int = 50,
  label: str = '',
  seed: int = 0,
  case: str = 'generator',
  recipe: str = GENERATOR_RECIPE,
) -> dict:
  """Case 3: a judge classifier (trained, or `judge` reused), then `recipe` (`configs/dit.py:smoke`) on 10 shapes
  (`shapes.CENTRED`), its samples scored by the judge: conditional accuracy (overall and its worst class),
  Fréchet distance and diversity."""
  start = time.perf_counter()
  folder, data_seconds = data_folder(workdir, shapes.SHAPES[:classes], per_class, GENERATOR_STYLE, picture_size, seed)
  config, applied = load_config(recipe, folder, overrides)
  judged = _judge(workdir, folder, config, folder_lib.list_images(folder)[0], judge, judge_overrides)
  run_dir = _run_dir(workdir, case, label)
  summary, _, seconds = _train(config, run_dir)
  evaluate_start = time.perf_counter()
  report = evaluate.evaluate(run_dir, classifier=judged['judge_workdir'], samples_per_class=samples_per_class)
  evaluate_seconds = time.perf_counter() - evaluate_start
  samples = report['samples']
  real = samples.get('real', {})
  per_class_accuracy = samples.get('per_class_accuracy') or {}  # None for a judge of other labels (species).
  worst = min(per_class_accuracy, key=per_class_accuracy.get) if per_class_accuracy else None
  return dict(
    kind='quality',
    case=case,
    recipe=recipe,
    overrides=applied,
    classes=report['classes'],
    per_class=per_class,
    style=GENERATOR_STYLE,
    picture_size=picture_side(GENERATOR_STYLE, picture_size),
    image_size=config.data.image_size,
    examples=_examples(config),
    test_flow_loss=report['flow_loss'],
    samples_per_class=samples_per_class,
    conditional_accuracy=samples.get('conditional_accuracy'),
    frechet_distance=samples['frechet_distance'],
    sample_per_class_accuracy=samples.get('per_class_accuracy'),
    worst_class_accuracy=per_class_accuracy.get(worst),
    worst_class=worst,
    diversity=samples.get('diversity'),
    per_class_diversity=samples.get('per_class_diversity'),
    blockiness=samples.get('blockiness'),
    real_blockiness=real.get('blockiness'),
    real_conditional_accuracy=real.get('conditional_accuracy'),
    real_per_class_accuracy=real.get('per_class_accuracy'),
    num_real=samples.get('num_real'),
    sampler=samples.get('sampler'),
    sample_steps=samples.get('steps'),
    guidance=samples.get('guidance'),
    guidance_interval=samples.get('guidance_interval'),
    **_training_fields(summary, seconds),
    evaluate_seconds=evaluate_seconds,
    **judged,
    judge_held_out=_held_out(judged['judge_workdir'], folder, config),
    data_seconds=data_seconds,
    wall_seconds=time.perf_counter() - start,
    workdir=run_dir,
  )


def generator128(
  workdir: str,
  per_class: int = PER_CLASS['generator128'],
  classes: int = 10,
  picture_size: int | None = None,
  overrides: Sequence[str] = (),
  judge: str | None = None,
  judge_overrides: Sequence[str] = (),
  samples_per_class: int = 50,
  label: str = '',
  seed: int = 0,
) -> dict:
  """Case 4: case 3 at 128 px: pictures of `GENERATOR128_PICTURE_SIZE` px, the DiT `GENERATOR128_RECIPE` (with
  `overrides`), the judge trained on its 128 px view of them."""
  return generator(
    workdir,
    per_class,
    classes,
    picture_size or GENERATOR128_PICTURE_SIZE,
    overrides,
    judge,
    judge_overrides,
    samples_per_class,
    label,
    seed,
    case='generator128',
    recipe=GENERATOR128_RECIPE,
  )


# Sweeps and the command ----------------------------------------------------------------------------------------


def parse_sweep(items: Sequence[str]) -> list[tuple[str, list[str]]]:
  """['learning_rate=1e-3,3e-3', 'epochs=3,6'] -> [('learning_rate', ['1e-3', '3e-3']), ('epochs', ['3', '6'])]."""
  axes = []
  for item in items:
    name, sep, values = item.partition('=')
    chosen = [v for v in values.split(',') if v]
    if not sep or not name or not chosen:
      raise UserError(f'--sweep {item!r} must look like FIELD=V1,V2 (e.g. learning_rate=1e-3,3e-3 epochs=3,6)')
    axes.append((name, chosen))
  return axes


def _resolve_axis(name: str, recipes: Sequence[str]) -> str:
  """The config field a sweep name means: a name without a dot is a `train` field, unless every recipe has a
  top-level field of that name (`seed`)."""
  if '.' in name:
    return name
  bases = [config_lib.load_config_file(_spec(r)) for r in recipes]
  if all(name in base and not hasattr(base[name], 'keys') for base in bases):
    return name
  if name == 'steps' and not any('steps' in base.train for base in bases):
    raise UserError(
      '--sweep steps=...: these recipes have no train.steps field (they train for train.epochs); '
      'sweep epochs=... instead'
    )
  return f'train.{name}'


def grid(axes: Sequence[tuple[str, list[str]]], recipes: Sequence[str]) -> list[list[str]]:
  """Every point of the grid as overrides; [[]] (one run with none) when there is no sweep."""
  resolved = [(_resolve_axis(name, recipes), values) for name, values in axes]
  return [
    [f'{field}={value}' for (field, _), value in zip(resolved, point)]
    for point in itertools.product(*(values for _, values in resolved))
  ]


def run(
  cases: str,
  workdir: str = 'workdirs/quality',
  per_class: int | None = None,
  classes: int = 10,
  picture_size: int | None = None,
  overrides: Sequence[str] = (),
  sweep: Sequence[str] = (),
  judge: str | None = None,
  judge_overrides: Sequence[str] = (),
  samples_per_class: int = 50,
  emit: Callable[[dict], None] = lambda row: None,
  data_seed: int = 0,
) -> list[dict]:
  """Runs `cases` (one of `CASES`, or 'all': `ALL`, the first three), each over the sweep's grid; `emit` gets each
  row as it is done (with the machine's description) and the rows are returned. `data_seed` draws other
  pictures: a recipe tuned on seed 0's is checked on pictures it was not tuned on."""
  chosen = ALL if cases == 'all' else (cases,)
  if any(c not in CASES for c in chosen):
    raise UserError(f'unknown --quality case {cases!r}; choose one of {", ".join(CASES + ("all",))}')
  if per_class is not None and per_class < 2:
    raise UserError(f'--per-class must be at least 2, got {per_class}')
  if not 2 <= classes <= 10:
    raise UserError(f'--classes must be 2 to 10 (the shapes there are), got {classes}')
  recipes = sorted({RECIPES[c] for c in chosen})
  if judge and judge_overrides:
    raise UserError('--judge-set configures a judge to train; with --judge DIR that judge is reused as it is')
  _check_known(overrides, recipes)
  _check_known(judge_overrides, [CLASSIFIER_RECIPE])
  points = grid(parse_sweep(sweep), recipes)
  _check_known([f for point in points for f in point], recipes)
  workdir = os.path.abspath(workdir)
  rows = []
  judges = {}  # Per generator case: a 32 px judge cannot grade 128 px samples.
  for case in chosen:
    for point in points:
      label = ','.join(item.removeprefix('train.') for item in point)
      settings = [*overrides, *point]
      n = per_class or PER_CLASS[case]
      if case in ('generator', 'generator128'):
        make = generator if case == 'generator' else generator128
        reused = judges.get(case, judge)
        row = make(
          workdir, n, classes, picture_size, settings, reused, judge_overrides, samples_per_class, label, data_seed
        )
        judges[case] = row['judge_workdir']  # Trained once: the sweep's later points reuse it.
      elif case == 'classifier':
        row = classifier(workdir, n, classes, picture_size, settings, label, data_seed)
      else:
        row = small(workdir, n, picture_size, settings, label, data_seed)
      row = dict(
        row,
        sweep={item.partition('=')[0]: item.partition('=')[2] for item in point} or None,
        data_seed=data_seed,
        **timing.machine(),
      )
      emit(row)
      rows.append(row)
  return rows


def _figure(value, digits: int = 3) -> str:
  return '-' if value is None else f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def table(rows: Sequence[dict]) -> str:
  """A short human-readable summary of the rows, one line each."""
  lines = [
    (
      f'{"case":<12} {"sweep":<28} {"accuracy":>8} {"balanced":>8} {"cond.acc":>8} {"worst":>6} {"real acc":>8} '
      f'{"Fréchet":>8} {"divers.":>7} {"blocky":>6} {"judge":>6} {"steps":>6} {"train s":>8} {"wall s":>8}'
    )
  ]
  for r in rows:
    sweep = ','.join(f'{k.removeprefix("train.")}={v}' for k, v in (r.get('sweep') or {}).items()) or '-'
    lines.append(
      f'{r["case"]:<12} {sweep[:28]:<28} {_figure(r.get("test_accuracy")):>8} '
      f'{_figure(r.get("test_balanced_accuracy")):>8} {_figure(r.get("conditional_accuracy")):>8} '
      f'{_figure(r.get("worst_class_accuracy")):>6} {_figure(r.get("real_conditional_accuracy")):>8} '
      f'{_figure(r.get("frechet_distance"), 2):>8} {_figure(r.get("diversity")):>7} '
      f'{_figure(r.get("blockiness"), 2):>6} {_figure(r.get("judge_test_accuracy")):>6} {r["steps"]:>6} '
      f'{r["train_seconds"]:>8.1f} {r["wall_seconds"]:>8.1f}'
    )
  return '\n'.join(lines)


def print_table(rows: Sequence[dict], file=None) -> None:
  print(table(rows), file=file or sys.stderr, flush=True)
