"""The model card (README.md) of a Hub repository: YAML front matter with the model-index, and a card whose every
number is read from the run's eval.json (measured on the exported step) and data.json; nothing is made up."""

from __future__ import annotations

import json
import os

from huggingface_hub import EvalResult, ModelCardData

import tinycats.data
from tinycats import inference
from tinycats.export import weights

DEFAULT_LICENSE = 'cc-by-sa-4.0'  # Oxford-IIIT Pet's licence: the weights are derived from it.
# eval.json fields that become card metrics (a field that is absent was not measured and is left out).
_CLASSIFIER_METRICS = (('accuracy', 'accuracy', 'Accuracy'), ('balanced_accuracy', 'accuracy', 'Balanced accuracy'))
_GENERATOR_METRICS = (('flow_loss', 'loss', 'Flow-matching loss (lower is better)'),)
_SAMPLE_METRICS = (
  ('conditional_accuracy', 'accuracy', 'Conditional accuracy of samples (judge classifier)'),
  ('frechet_distance', 'frechet_distance', 'Fréchet distance in judge features (lower is better)'),
  ('species_accuracy', 'accuracy', 'Species accuracy of samples (judge classifier)'),
  ('cat_rate', 'accuracy', 'Share of cat-breed samples judged cat'),
)


def read_eval(workdir: str, step: int) -> tuple[dict, str]:
  """(eval.json, why it is not used): the metrics count only if they were measured on the exported step."""
  path = os.path.join(workdir, 'eval.json')
  if not os.path.isfile(path):
    return {}, f'no eval.json in {workdir}: run `tinycats evaluate --workdir {workdir}` to measure the model'
  with open(path) as f:
    report = json.load(f)
  if report.get('step') != step:
    return {}, (
      f'eval.json measured step {report.get("step")}, but the export is step {step}: run '
      f'`tinycats evaluate --workdir {workdir}` again'
    )
  return report, ''


def card_metrics(config, report: dict) -> list[dict]:
  """[{key, type, name, value, split}] for each metric eval.json holds (none are made up or defaulted)."""
  split = report.get('split', 'test')
  out = []
  table = _CLASSIFIER_METRICS if config.task == 'classifier' else _GENERATOR_METRICS
  for key, kind, name in table:
    if isinstance(report.get(key), (int, float)):
      out.append(dict(key=key, type=kind, name=f'{name} ({split})', value=report[key], split=split))
  for key, kind, name in _SAMPLE_METRICS if config.task == 'generator' else ():
    value = report.get('samples', {}).get(key)
    if isinstance(value, (int, float)):
      out.append(dict(key=f'samples.{key}', type=kind, name=name, value=value, split=split))
  return out


def _length(train_config, train_images: int | None) -> str:
  """How long the run trained: `train.steps` when set (the epochs are then whatever those steps made), else
  `train.epochs`."""
  steps = train_config.get('steps', 0)
  if not steps:
    return f'{train_config.epochs} epochs'
  if not train_images:
    return f'{steps:,} steps'
  return (
    f'{steps:,} steps (about {steps * train_config.batch_size / train_images:.0f} epochs of {train_images:,} images)'
  )


def train_images(workdir: str) -> int | None:
  """The size of the run's training split, from its data.json (None for a run older than it)."""
  path = os.path.join(workdir, tinycats.data.RECORD)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f).get('train', {}).get('images')


def dataset(config) -> tuple[str, str | None]:
  """(name shown, Hub dataset id or None)."""
  if config.data.source == 'tfds':
    return 'Oxford-IIIT Pet', 'timm/oxford-iiit-pet'
  return f'image folder {os.path.basename(os.path.normpath(config.data.folder))!r}', None


def _front_matter(config, metrics: list[dict], license_id: str, repo_id: str) -> str:
  name, dataset_id = dataset(config)
  classify = config.task == 'classifier'
  task_type = 'image-classification' if classify else 'unconditional-image-generation'
  tags = ['jax', 'flax', 'onnx', 'safetensors', 'tinycats'] + (['oxford-iiit-pet'] if dataset_id else [])
  tags += ['resnet', 'image-classification'] if classify else ['dit', 'flow-matching', 'class-conditional']
  results = [
    EvalResult(
      task_type=task_type,
      dataset_type=dataset_id or 'imagefolder',
      dataset_name=name,
      dataset_split=m['split'],
      metric_type=m['type'],
      metric_name=m['name'],
      metric_value=m['value'],
    )
    for m in metrics
  ]
  data = ModelCardData(
    license=license_id,
    library_name='tinycats',
    tags=tags,
    pipeline_tag=task_type,
    datasets=[dataset_id] if dataset_id else None,
    metrics=sorted({m['type'] for m in metrics}) or None,
    model_name=repo_id.split('/')[-1],
    eval_results=results or None,
  )
  return data.to_yaml()


def model_card(
  config,
  step: int,
  report: dict,
  missing: str,
  files: list[str],
  repo_id: str,
  license_id: str = DEFAULT_LICENSE,
  train_images: int | None = None,
) -> str:
  """README.md: YAML front matter and a card whose numbers come only from eval.json (and the run's data.json:
  `train_images`, the training split's size, for the epochs a fixed step budget made)."""
  metrics = card_metrics(config, report)
  classify = config.task == 'classifier'
  m, t = config.model, config.train
  name, _ = dataset(config)
  if classify:
    what = (
      f'A {m.name} (width {m.width}) classifier of {len(config.data.classes)} classes '
      f'({", ".join(config.data.classes[:6])}{", ..." if len(config.data.classes) > 6 else ""}) '
      f'at {config.data.image_size} px, trained with tinycats (JAX/Flax) on {name}.'
    )
  else:
    what = (
      f'A class-conditional DiT (width {m.width}, depth {m.depth}, {m.heads} heads, patch {m.patch_size}) '
      f'trained by flow matching at {config.data.image_size} px on {name}, {len(config.data.classes)} classes '
      f'({", ".join(config.data.classes)}). These are the EMA weights (decay {config.ema.decay}).'
    )
  lines = [
    '---',
    _front_matter(config, metrics, license_id, repo_id).strip(),
    '---',
    '',
    f'# {repo_id.split("/")[-1]}',
    '',
    what,
    '',
  ]
  lines += ['## Measured', '']
  if metrics:
    lines += [
      f'From `eval.json`, written by `tinycats evaluate` on the {report.get("split", "test")} split '
      f'({report.get("num_examples", "?")} images) at step {step}:',
      '',
      '| metric | value |',
      '|---|---|',
    ]
    lines += [f'| {x["name"]} | {x["value"]:.4f} |' for x in metrics]
    if not classify and 'samples' in report:
      s = report['samples']
      lines += [
        '',
        f'Samples: {s.get("num_generated")} images, {s.get("sampler")} sampler, {s.get("steps")} steps, '
        f'guidance {s.get("guidance", s.get("cfg"))}, seed {s.get("seed")}; '  # cfg: eval.json before the rename.
        f'the real {report.get("split")} images score '
        + ', '.join(f'{k} {v:.4f}' for k, v in s.get('real', {}).items() if isinstance(v, float))
        + '.',
      ]
  else:
    lines += [f'No metrics: {missing or "eval.json holds none for this model"}.']
  lines += [
    '',
    '## Training',
    '',
    f'{_length(t, train_images)}, batch {t.batch_size}, {t.optimizer} (learning rate {t.learning_rate}, weight '
    f'decay {t.weight_decay}, warm-up {t.warmup_epochs} epochs, global-norm clipping {t.grad_clip}), '
    f'{m.dtype} compute with float32 parameters, seed {config.seed}; step {step} is the checkpoint exported '
    f'(the best by {"validation balanced accuracy" if classify else "validation flow loss"}). '
    'The full configuration is `run_config` in config.json.',
    '',
  ]
  lines += ['## Files', '', '| file | what |', '|---|---|']
  described = {
    inference.WEIGHTS: 'the weights, flat NNX keys (float32)',
    weights.TORCHVISION_WEIGHTS: (
      f'torchvision key names and layouts: `torchvision.models.{m.name}(num_classes='
      f'{len(config.data.classes)}).load_state_dict(safetensors.torch.load_file(...))`'
      + (
        ''
        if m.get('width', 64) == 64
        else f' (width {m.width}: torchvision builds width 64; use a ResNet of that width with the same names)'
      )
    ),
    'config.json': 'architecture, normalisation, classes, training recipe, metrics, run config',
    'models.json': 'what the web page reads: file names, inputs and outputs, classes, sampling defaults',
    'samples.png': 'one row per class, sampled from these weights (config sampling settings, seed 0)',
    'README.md': 'this model card',
  }
  for name_ in files:
    default = 'int8 dynamic quantisation of the ONNX model' if 'quantized' in name_ else 'ONNX (float32)'
    lines.append(f'| `{name_}` | {described.get(name_, default if name_.endswith(".onnx") else "")} |')
  lines += ['', '## Use', '', '```python']
  if classify:
    lines += [
      'from tinycats import Classifier',
      f"clf = Classifier.load('{repo_id}')",
      'probs = clf.predict(images)  # uint8 (N, H, W, 3)',
    ]
  else:
    lines += [
      'from tinycats import Generator',
      f"gen = Generator.load('{repo_id}')",
      f"images = gen.sample(['{config.data.classes[0]}'] * 4, seed=0)  # uint8 NHWC; the run's sampling settings",
    ]
  lines += ['```', '']
  if not classify:
    lines += ['![samples](samples.png)', '']
    lines += [
      'Sampling: start from N(0, 1) noise at t = 0 and integrate the velocity to t = 1 '
      '(`x += dt * v`); the ONNX model has no guidance inside: run it with the class and with the null label '
      f'({len(config.data.classes)}) and combine `v_null + guidance * (v_class - v_null)`. At t = 1, x is the image '
      f'normalised by {config.data.normalization!r} (pixels = x * std + mean, in config.json).',
      '',
    ]
  return '\n'.join(lines)
