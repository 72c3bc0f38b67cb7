"""`tinycats export hub`: a trained workdir -> a Hugging Face Hub model repository (or just its folder).

The folder holds everything a user of either world needs:
  model.safetensors              the network (EMA weights for a generator), flat NNX keys (`weights`)
  model_torchvision.safetensors  classifiers: torchvision's names and layouts, for PyTorch's load_state_dict
  config.json                    architecture, image size, normalisation, classes, flow convention, recipe,
                                 the metrics of eval.json, and the run config that `*.load` rebuilds from
  cats.onnx / generator.onnx (+ _quantized with --int8), models.json   the web page's files (`export.onnx`)
  samples.png                    generators: one row per class from the exported weights
  README.md                      the model card; every number in it is read from eval.json
It is then uploaded in one commit (repo created if needed, transient failures retried: `hub_upload`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from safetensors.numpy import save_file

from tinycats import flow, inference, plots, writers
from tinycats.data import augment
from tinycats.errors import UserError
from tinycats.export import card, folders, onnx as onnx_export, weights
from tinycats.export.hub_upload import check_repo_id, hub_token, upload

NO_UPLOAD = 'assemble the folder only with --out-dir DIR --no-upload'

FLOW_CONVENTION = {
  'path': 'x_t = t * data + (1 - t) * noise, t in [0, 1]: t = 0 is noise, t = 1 is data',
  'target': 'velocity = data - noise',
  'time_input': 't in [0, 1] (scaled by 1000 inside the model)',
  'null_label': 'index len(classes): the unconditional model for classifier-free guidance',
  'guidance': 'v = v(null) + guidance * (v(label) - v(null))',
}


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
    'dataset': card.dataset(config)[0],
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


def assemble(
  workdir: str,
  folder: str,
  *,
  repo_id: str,
  int8: bool = False,
  license_id: str = card.DEFAULT_LICENSE,
  step: int | None = None,
  data_dir: str | None = None,
) -> dict:
  """Writes the repository's files into `folder` (staged, then moved in) and returns what was written."""
  onnx_export.require_export_packages()
  config, graphdef, state, step = inference.load(workdir, step=step)
  report, missing = card.read_eval(workdir, step)
  if missing:
    print(f'tinycats export: {missing}; the card will show no metrics', file=sys.stderr)
  with folders.output_folder(folder), folders.staging(folder) as tmp:
    onnx_report = onnx_export.write_onnx(config, state, step, tmp, int8=int8, source=workdir, data_dir=data_dir)
    files = [inference.WEIGHTS]
    weights.save(state, os.path.join(tmp, inference.WEIGHTS), metadata={'format': 'flax-nnx', 'step': str(step)})
    if config.task == 'classifier':
      state_dict = weights.torchvision_state_dict(state, num_batches_tracked=step)
      save_file(state_dict, os.path.join(tmp, weights.TORCHVISION_WEIGHTS), metadata={'format': 'pt'})
      files.append(weights.TORCHVISION_WEIGHTS)
    else:
      grid = flow.sample_grid(config, graphdef, state, per_label=config.sample.per_class, seed=0)
      plots.save_grid(grid, os.path.join(tmp, 'samples.png'), list(config.data.classes))
      files.append('samples.png')
    files += onnx_report['files'] + ['models.json', 'config.json', 'README.md']
    writers.write_json(export_config(config, step, report, files), os.path.join(tmp, 'config.json'))
    with open(os.path.join(tmp, 'README.md'), 'w') as f:
      f.write(card.model_card(config, step, report, missing, files, repo_id, license_id, card.train_images(workdir)))
    folders.publish(tmp, files, folder)
  return {
    'folder': os.path.abspath(folder),
    'files': files,
    'step': step,
    'onnx': onnx_report,
    'metrics': {m['key']: m['value'] for m in card.card_metrics(config, report)},
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


def export_hub(
  workdir: str,
  repo_id: str,
  *,
  private: bool = False,
  endpoint: str | None = None,
  out_dir: str | None = None,
  no_upload: bool = False,
  int8: bool = False,
  license_id: str = card.DEFAULT_LICENSE,
  data_dir: str | None = None,
) -> dict:
  """Assembles the repository folder (in `out_dir`, else a temporary one) and, unless `no_upload`, uploads it."""
  check_repo_id(repo_id)
  if no_upload and not out_dir:
    raise UserError('--no-upload keeps only the folder: give --out-dir DIR')
  token = None if no_upload else hub_token(NO_UPLOAD)  # Before any work.
  folder = out_dir or tempfile.mkdtemp(prefix='tinycats-hub-')
  try:
    result = assemble(workdir, folder, repo_id=repo_id, int8=int8, license_id=license_id, data_dir=data_dir)
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
