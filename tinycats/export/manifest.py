"""`models.json`: what the web page knows about the exported models (files, inputs, outputs, preprocessing,
sampling, runtime), written by `tinycats export onnx` and merged by `tinycats export site`.

One folder can hold both models: writing one model's sections keeps the other's.
"""

from __future__ import annotations

import datetime
import json
import os

from tinycats import flow
from tinycats.data import augment
from tinycats.inference import ExportError

BATCH = 'batch_size'  # The dynamic batch axis: the same name in the ONNX files and models.json.
# onnxruntime-web 1.20.x cannot load opset 23; 1.24.2 and 1.30.0 were checked to load these files in Chromium.
WEB_RUNTIME = {'onnxruntime-web': '>=1.24.2', 'opset': 23}


def read_models_json(out_dir: str) -> dict:
  """The folder's models.json (the other model's sections are kept), checked before any work."""
  path = os.path.join(out_dir, 'models.json')
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      existing = json.load(f)
    if not isinstance(existing, dict):
      raise ValueError('not a JSON object')
  except ValueError as e:
    raise ExportError(f'{path} is not a readable models.json ({e}); move it away or choose another --out-dir') from e
  return existing


def _size(nbytes: int) -> str:
  return f'{nbytes / 2**20:.0f} MB' if nbytes >= 2**20 else f'{nbytes / 2**10:.0f} KB'


def _file_entry(path: str, description: str) -> dict:
  nbytes = os.path.getsize(path)
  return {
    'path': os.path.basename(path),
    'sizeBytes': nbytes,
    'sizeFormatted': _size(nbytes),
    'description': description,
  }


def _preprocess(config) -> dict:
  """How an image becomes the model's input (or a real image the generator's output is compared with):
  the policy of `augment.eval_transform`, for the page to repeat."""
  fraction, size, fit = augment.eval_crop(config.data), config.data.image_size, config.data.cache_size
  return {
    'fit_size': fit,
    'fit': 'longer side to fit_size, aspect kept: Pillow resize(BILINEAR, reducing_gap=None), uint8',
    'crop': 'center_square',
    'crop_fraction': fraction,
    'resize': 'bilinear, antialiased',
    'size': size,
    'description': f'the whole image with its longer side resized to {fit} (Pillow bilinear), then the central '
    f'square of side {fraction:g} x the shorter side, resized to {size}x{size} (bilinear, antialiased)',
  }


def page_sampling(config) -> dict:
  """The page's default sampling settings: the run's `sample.*`, so its default picture is `tinycats sample`'s."""
  s = config.sample
  lo, hi = flow.check_guidance_interval(s.get('guidance_interval', (0.0, 1.0)))
  return {
    'method': f'{s.sampler.capitalize()} integration',
    'sampler': s.sampler,
    'steps': int(s.steps),
    'guidance': float(s.guidance),
    'guidanceInterval': [lo, hi],
  }


def models_json(existing: dict, config, paths: dict[str, str], info: dict) -> dict:
  """The page's models.json with this model's sections (re)written; the other model's sections are kept."""
  out = dict(existing)
  out.setdefault('models', {})
  size = config.data.image_size
  classes = list(config.data.classes)
  recommended = dict(out.get('recommended', {}))
  quantized = (
    {'quantized': _file_entry(paths['int8'], 'int8 dynamic quantisation (ONNX Runtime) of the same model')}
    if 'int8' in paths
    else {}
  )
  if config.task == 'classifier':
    out['models']['classifier'] = {
      'original': _file_entry(paths['float32'], 'float32 ResNet classifier (single file)'),
      **quantized,
    }
    mean, std = augment.normalization('imagenet')
    out['classifier'] = {
      'input': {
        'name': 'input',
        'shape': [BATCH, 3, size, size],
        'description': f'RGB image, 3 channels, {size}x{size} pixels, NCHW',
        'normalization': {
          'mean': list(mean),
          'std': list(std),
          'description': 'pixels in [0, 1], then (x - mean) / std per channel',
        },
      },
      'output': {
        'name': 'output',
        'shape': [BATCH, len(classes)],
        'description': 'logits (softmax gives probabilities)',
        'classes': classes,
      },
      'preprocess': _preprocess(config),
    }
    out['breed_classes'] = {
      'note': f'the classifier outputs {len(classes)} classes',
      'classes': [{'index': i, 'name': c} for i, c in enumerate(classes)],
    }
    recommended['classifier'] = 'quantized' if 'int8' in paths else 'original'
  else:
    out['models']['generator'] = {
      **_file_entry(paths['float32'], 'class-conditional DiT (EMA weights), velocity for flow-matching sampling'),
      **quantized,
    }
    null = len(classes)
    out['generator'] = {
      'inputs': [
        {
          'name': 'noise',
          'shape': [BATCH, 3, size, size],
          'description': 'the current state x_t (at t=0: standard normal noise)',
          'range': 'N(0, 1) at t=0',
        },
        {
          'name': 'timestep',
          'shape': [BATCH],
          'description': 'ODE time: 0 is noise, 1 is data',
          'range': '[0.0, 1.0]',
        },
        {
          'name': 'breed',
          'shape': [BATCH],
          'dtype': 'int64',
          'description': f'class index 0-{null - 1}; {null} (or -1) is the null label for guidance',
          'range': f'[0, {null}]',
        },
      ],
      'output': {
        'name': 'velocity',
        'shape': [BATCH, 3, size, size],
        'description': 'dx/dt = data - noise; x at t=1 is the image, normalised as below',
      },
      'sampling': dict(
        page_sampling(config),
        nullLabel=null,
        description=(
          "the run's sample.* settings (what `tinycats sample` uses by default): from t=0 to 1 in `steps` equal "
          'steps, euler x(t+dt) = x(t) + dt * v(t), heun x(t+dt) = x(t) + dt/2 * (v(t) + v(t+dt) at the Euler '
          "point), the last step euler's (no evaluation at t=1); v = v(null) + guidance * (v(breed) - v(null)), "
          'both in one batch of two, where '
          'guidanceInterval[0] <= t <= guidanceInterval[1] (an upper end of 1 is unbounded), else v = v(breed) '
          'from the breed alone (no null pass); float32 arithmetic'
        ),
      ),
      'normalization': {
        'mean': list(augment.normalization(config.data.normalization)[0]),
        'std': list(augment.normalization(config.data.normalization)[1]),
        'description': 'pixels = x * std + mean, in [0, 1]',
      },
      'preprocess': dict(
        _preprocess(config),
        note='how the training images were cut: a real image shown beside the samples should be cut the same way',
      ),
    }
    out['generator_breeds'] = {
      'note': f'the generator is conditioned on {null} classes; {null} is the null label',
      'classes': [{'index': i, 'name': c} for i, c in enumerate(classes)],
    }
    recommended['generator'] = 'generator'
  out['recommended'] = recommended
  out['runtime'] = {
    'name': 'ONNX Runtime Web',
    'executionProviders': ['wasm', 'webgl', 'webgpu'],
    'recommendedProvider': 'wasm',
    **WEB_RUNTIME,
  }
  out.setdefault('version', '2.0.0')
  out['generatedAt'] = datetime.date.today().isoformat()
  out.setdefault('tinycats', {})[config.task] = info
  return out
