"""`tinycats export hub`: a trained workdir -> a Hugging Face Hub model repository (or just its folder).

The folder holds everything a user of either world needs:
  model.safetensors              the network (EMA weights for a generator), flat NNX keys (`weights`)
  model_torchvision.safetensors  classifiers: torchvision's names and layouts, for PyTorch's load_state_dict
  config.json                    architecture, image size, normalisation, classes, flow convention, recipe,
                                 the metrics of eval.json, and the run config that `*.load` rebuilds from
  cats.onnx / generator.onnx (+ _quantized with --int8), models.json   the web page's files (`export.onnx`)
  samples.png                    generators: one row per class from the exported weights
  README.md                      the model card; every number in it is read from eval.json
It is then uploaded in one commit (repo created if needed, transient failures retried).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from huggingface_hub import EvalResult, HfApi, ModelCardData, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors.numpy import save_file

import tinycats.data
from tinycats import inference, metrics
from tinycats.data import augment
from tinycats.errors import UserError
from tinycats.export import onnx as onnx_export, weights
from tinycats.inference import ExportError
from tinycats.train.tasks import generator as generator_task

DEFAULT_LICENSE = 'cc-by-sa-4.0'  # Oxford-IIIT Pet's licence: the weights are derived from it.
FLOW_CONVENTION = {
  'path': 'x_t = t * data + (1 - t) * noise, t in [0, 1]: t = 0 is noise, t = 1 is data',
  'target': 'velocity = data - noise',
  'time_input': 't in [0, 1] (scaled by 1000 inside the model)',
  'null_label': 'index len(classes): the unconditional model for classifier-free guidance',
  'guidance': 'v = v(null) + cfg * (v(label) - v(null))',
}
# eval.json fields that become card metrics (a field that is absent was not measured and is left out).
_CLASSIFIER_METRICS = (('accuracy', 'accuracy', 'Accuracy'), ('balanced_accuracy', 'accuracy', 'Balanced accuracy'))
_GENERATOR_METRICS = (('flow_loss', 'loss', 'Flow-matching loss (lower is better)'),)
_SAMPLE_METRICS = (
  ('conditional_accuracy', 'accuracy', 'Conditional accuracy of samples (judge classifier)'),
  ('frechet_distance', 'frechet_distance', 'Fréchet distance in judge features (lower is better)'),
  ('species_accuracy', 'accuracy', 'Species accuracy of samples (judge classifier)'),
  ('cat_rate', 'accuracy', 'Share of cat-breed samples judged cat'),
)


def hub_token() -> str:
  """HF_TOKEN, else the token `hf auth login` stored; none is an error before any work."""
  token = get_token()
  if not token:
    raise UserError(
      'no Hugging Face token: set HF_TOKEN=hf_... (a write token from '
      'https://huggingface.co/settings/tokens) or run `hf auth login`; '
      'or assemble the folder only with --out-dir DIR --no-upload'
    )
  return token


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


def _dataset(config) -> tuple[str, str | None]:
  """(name shown, Hub dataset id or None)."""
  if config.data.source == 'tfds':
    return 'Oxford-IIIT Pet', 'timm/oxford-iiit-pet'
  return f'image folder {os.path.basename(os.path.normpath(config.data.folder))!r}', None


def export_config(config, step: int, report: dict, files: list[str]) -> dict:
  """The export's config.json: what the model is, how it was trained, what was measured, and the run config."""
  mean, std = augment.normalization(config.data.normalization)
  out = {
    'library': 'tinycats',
    'task': 'classification' if config.task == 'classifier' else 'flow-matching generation',
    'architecture': dict(config.model.to_dict()),
    'image_size': config.data.image_size,
    'normalization': {'name': config.data.normalization, 'mean': list(mean), 'std': list(std)},
    'classes': list(config.data.classes),
    'num_classes': len(config.data.classes),
    'step': step,
    'dataset': _dataset(config)[0],
    'labels': config.data.labels if config.data.source == 'tfds' else 'folders',
    'training': dict(config.train.to_dict()),
    'weights': inference.WEIGHTS,
    'files': files,
    'metrics': report,
    'run_config': _portable(config.to_dict()),
  }
  if config.task == 'generator':
    out.update(
      flow=dict(FLOW_CONVENTION, timesteps=config.flow.timesteps, label_dropout=config.flow.label_dropout),
      null_label=len(config.data.classes),
      ema_decay=config.ema.decay,
      sampling=dict(config.sample.to_dict()),
    )
  return out


def _portable(run_config: dict) -> dict:
  """The run config without this machine's paths (they mean nothing elsewhere, and may be private)."""
  data = dict(run_config['data'])
  data.update({k: '' for k in ('data_dir', 'folder', 'cache_dir') if k in data})
  return dict(run_config, data=data)


def _front_matter(config, metrics: list[dict], license_id: str, repo_id: str) -> str:
  name, dataset_id = _dataset(config)
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
  name, _ = _dataset(config)
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
        f'guidance {s.get("cfg")}, seed {s.get("seed")}; the real {report.get("split")} images score '
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
      f'({len(config.data.classes)}) and combine `v_null + cfg * (v_class - v_null)`. At t = 1, x is the image '
      f'normalised by {config.data.normalization!r} (pixels = x * std + mean, in config.json).',
      '',
    ]
  return '\n'.join(lines)


def assemble(
  workdir: str,
  folder: str,
  *,
  repo_id: str,
  int8: bool = False,
  license_id: str = DEFAULT_LICENSE,
  step: int | None = None,
) -> dict:
  """Writes the repository's files into `folder` (staged, then moved in) and returns what was written."""
  onnx_export.require_export_packages()
  config, graphdef, state, step = inference.load(workdir, step=step)
  report, missing = read_eval(workdir, step)
  if missing:
    print(f'tinycats export: {missing}; the card will show no metrics', file=sys.stderr)
  with onnx_export.output_folder(folder), onnx_export.staging(folder) as tmp:
    onnx_report = onnx_export.write_onnx(config, state, step, tmp, int8=int8, source=workdir)
    files = [inference.WEIGHTS]
    weights.save(state, os.path.join(tmp, inference.WEIGHTS), metadata={'format': 'flax-nnx', 'step': str(step)})
    if config.task == 'classifier':
      state_dict = weights.torchvision_state_dict(state, num_batches_tracked=step)
      save_file(state_dict, os.path.join(tmp, weights.TORCHVISION_WEIGHTS), metadata={'format': 'pt'})
      files.append(weights.TORCHVISION_WEIGHTS)
    else:
      grid = generator_task.sample_grid(config, graphdef, state, per_label=config.sample.per_class, seed=0)
      metrics.save_grid(grid, os.path.join(tmp, 'samples.png'), list(config.data.classes))
      files.append('samples.png')
    files += onnx_report['files'] + ['models.json', 'config.json', 'README.md']
    metrics.write_json(export_config(config, step, report, files), os.path.join(tmp, 'config.json'))
    with open(os.path.join(tmp, 'README.md'), 'w') as f:
      f.write(model_card(config, step, report, missing, files, repo_id, license_id, train_images(workdir)))
    onnx_export.publish(tmp, files, folder)
  return {
    'folder': os.path.abspath(folder),
    'files': files,
    'step': step,
    'onnx': onnx_report,
    'metrics': {m['key']: m['value'] for m in card_metrics(config, report)},
  }


def stale_files(files: list[str]) -> list[str]:
  """The names an export can write that this one did not: left in the repo, they would contradict it
  (an int8 model models.json no longer lists, a classifier's files beside a generator's)."""
  possible = {
    inference.WEIGHTS,
    weights.TORCHVISION_WEIGHTS,
    'samples.png',
    'models.json',
    'config.json',
    'README.md',
    *(name for names in onnx_export.FILES.values() for name in names),
  }
  return sorted(possible - set(files))


def upload(
  folder: str,
  repo_id: str,
  *,
  token: str,
  files: list[str] | None = None,
  stale: list[str] = (),
  private: bool = False,
  endpoint: str | None = None,
) -> str:
  """Creates the repo if needed (made private if `private`, even if it exists), uploads `files` of `folder`
  (all by default) and deletes `stale` in one commit.

  Other files in the repo (a user's own notes, .gitattributes) are left alone. huggingface_hub
  retries each request that fails on a connection error or a 5xx answer, with back-off.
  """
  api = HfApi(endpoint=endpoint or os.environ.get('HF_ENDPOINT'), token=token)
  try:
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
    if private:  # create_repo leaves an existing repo as it was; --private means private before the upload.
      api.update_repo_settings(repo_id, private=True, repo_type='model')
    commit = api.upload_folder(
      repo_id=repo_id,
      folder_path=folder,
      repo_type='model',
      allow_patterns=files,
      delete_patterns=list(stale) or None,
      commit_message='Upload tinycats export',
    )
  except Exception as e:  # pylint: disable=broad-except  # HTTP, network, auth: one message with the way out.
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    hint = {401: 'the token is not valid', 403: 'the token may not write to this repo (use a write token)'}
    raise ExportError(
      f'uploading to {repo_id!r} failed: {type(e).__name__}: {e}'
      + (f' ({hint[status]})' if status in hint else '')
      + f'; the files are complete in {folder}'
    ) from e
  return getattr(commit, 'commit_url', str(commit))


def export_hub(
  workdir: str,
  repo_id: str,
  *,
  private: bool = False,
  endpoint: str | None = None,
  out_dir: str | None = None,
  no_upload: bool = False,
  int8: bool = False,
  license_id: str = DEFAULT_LICENSE,
) -> dict:
  """Assembles the repository folder (in `out_dir`, else a temporary one) and, unless `no_upload`, uploads it."""
  try:
    validate_repo_id(repo_id)
  except HFValidationError as e:
    raise UserError(f'--repo-id {repo_id!r} is not a Hub repo id (USER/NAME): {e}') from e
  if no_upload and not out_dir:
    raise UserError('--no-upload keeps only the folder: give --out-dir DIR')
  token = None if no_upload else hub_token()  # Before any work.
  folder = out_dir or tempfile.mkdtemp(prefix='tinycats-hub-')
  try:
    result = assemble(workdir, folder, repo_id=repo_id, int8=int8, license_id=license_id)
  except BaseException:
    if not out_dir:
      shutil.rmtree(folder, ignore_errors=True)
    raise
  if not no_upload:
    result['url'] = upload(
      folder,
      repo_id,
      token=token,
      files=result['files'],
      stale=stale_files(result['files']),
      private=private,
      endpoint=endpoint,
    )  # A failure keeps the folder.
    result['repo_id'] = repo_id
    if not out_dir:
      shutil.rmtree(folder, ignore_errors=True)
      del result['folder']
  return result
