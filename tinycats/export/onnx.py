"""`tinycats export onnx`: a trained workdir -> ONNX files the original web page runs unchanged, and `models.json`
(written by `export/manifest.py`).

Contract (the page's, see models.json):
  classifier  cats.onnx       input  float32 [N,3,S,S] NCHW, ImageNet mean/std  -> output float32 [N,classes] logits
  generator   generator.onnx  noise float32 [N,3,S,S], timestep float32 [N] in [0,1], breed int64 [N]
                              -> velocity float32 [N,3,S,S]; EMA weights; no guidance inside (the page does it)
S follows the run's config; N is dynamic. Breed 0..C-1 are the classes, C the null label; -1 (what the
page sends for its unconditional pass) also selects the null label.

The graph is the float32 network (ONNX Runtime's CPU and web kernels are float32; training computes in
bf16), traced by jax2onnx. The command checks it: ONNX Runtime on CPU must match the JAX float32
eval-mode model within `TOLERANCE` on seeded inputs with N=1 and N=3, or nothing is written.
`--int8` adds ONNX Runtime dynamic quantisation (`*_quantized.onnx`) and reports its size and what it
changes on a validation batch. Files are written in a staging folder and moved in at the end.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

import tinycats.data
from tinycats import flow, inference
from tinycats.data import augment
from tinycats.errors import UserError
from tinycats.export import folders, manifest
from tinycats.inference import ExportError
from tinycats.train import public as train_public

TOLERANCE = 1e-4
FILES = {
  'classifier': ('cats.onnx', 'cats_quantized.onnx'),
  'generator': ('generator.onnx', 'generator_quantized.onnx'),
}
# Python ONNX Runtime's default int8 matmul saturates on x86 CPUs without VNNI (velocities 0.43 off the browser's);
# this kernel gives what onnxruntime-web computes (4.8e-7 off): int8 parity is measured with it.
PRECISE_INT8 = ('session.x64quantprecision', '1')
INT8_CHECK_BATCH = 256
# jax2onnx 0.17.1: this graph pass mis-wires the residual Add after a strided downsample in the
# ResNet (ONNX Runtime then refuses the graph: "Incompatible dimensions"). Without it the graph
# keeps NHWC<->NCHW transpose pairs, which ONNX Runtime's own optimiser removes at load time.
_RESNET_UNSAFE_PASSES = ('remove_redundant_transpose_pairs',)


def float32_network(config, state) -> nnx.Module:
  """The trained network (`state`: the classifier, or the EMA DiT) rebuilt with float32 compute, in eval mode."""
  float32 = ml_collections.ConfigDict(config.to_dict())
  float32.model.dtype = 'float32'
  graphdef, abstract = train_public.abstract_network(float32)
  nnx.replace_by_pure_dict(abstract, nnx.to_pure_dict(state))
  model = nnx.merge(graphdef, abstract)
  model.eval()
  return model


def classifier_forward(model, normalization: str):
  """ImageNet-normalised NCHW images -> logits. A run trained on another normalisation converts in the graph."""
  mean, std = (jnp.asarray(v, jnp.float32) for v in augment.normalization(normalization))
  imagenet_mean, imagenet_std = (jnp.asarray(v, jnp.float32) for v in augment.normalization('imagenet'))

  def forward(image):
    x = jnp.transpose(image, (0, 2, 3, 1))
    if normalization != 'imagenet':
      x = (x * imagenet_std + imagenet_mean - mean) / std
    return model.fc(model.features(x))  # Eval mode: dropout is the identity, BatchNorm uses its statistics.

  return forward


def generator_forward(model):
  """(noise NCHW, timestep, breed) -> velocity NCHW; breed < 0 is the null label."""

  def forward(noise, timestep, breed):
    labels = jnp.where(breed < 0, model.null_label, breed).astype(jnp.int32)
    velocity = model(jnp.transpose(noise, (0, 2, 3, 1)), timestep, labels)
    return jnp.transpose(velocity, (0, 3, 1, 2))

  return forward


@contextlib.contextmanager
def _quiet_and_without(passes):
  """jax2onnx with some graph passes left out (see _RESNET_UNSAFE_PASSES) and onnx_ir's warnings muted."""
  from jax2onnx.converter import ir_optimizations

  saved = ir_optimizations._OPTIMIZER_PASSES  # pylint: disable=protected-access
  logger = logging.getLogger('onnx_ir')
  level = logger.level
  ir_optimizations._OPTIMIZER_PASSES = tuple(p for p in saved if p.name not in passes)  # pylint: disable=protected-access
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    ir_optimizations._OPTIMIZER_PASSES = saved  # pylint: disable=protected-access
    logger.setLevel(level)


def _int64_input(proto, name: str) -> None:
  """Makes graph input `name` int64 (what the page feeds) with a Cast to the int32 the traced graph uses."""
  import onnx

  inner = f'{name}_int32'
  for node in proto.graph.node:
    for i, value in enumerate(node.input):
      if value == name:
        node.input[i] = inner
  graph_input = next(i for i in proto.graph.input if i.name == name)
  graph_input.type.tensor_type.elem_type = onnx.TensorProto.INT64
  proto.graph.node.insert(
    0, onnx.helper.make_node('Cast', [name], [inner], to=onnx.TensorProto.INT32, name=f'{name}_to_int32')
  )


def convert(config, model):
  """(onnx.ModelProto, forward function, input names) for the float32 network of a run."""
  import onnx
  from jax2onnx import to_onnx

  size = config.data.image_size
  if config.task == 'classifier':
    forward, names, skip = classifier_forward(model, config.data.normalization), ['input'], _RESNET_UNSAFE_PASSES
    specs, outputs = [(manifest.BATCH, 3, size, size)], ['output']
  else:
    forward, names, skip = generator_forward(model), ['noise', 'timestep', 'breed'], ()
    specs = [(manifest.BATCH, 3, size, size), (manifest.BATCH,), jax.ShapeDtypeStruct((manifest.BATCH,), jnp.int32)]
    outputs = ['velocity']
  with _quiet_and_without(skip):
    proto = to_onnx(forward, specs, model_name=f'tinycats_{config.task}', input_names=names, output_names=outputs)
  if config.task == 'generator':
    _int64_input(proto, 'breed')
  onnx.checker.check_model(proto)
  return proto, forward, names


def parity_inputs(config, batch: int, seed: int) -> dict[str, np.ndarray]:
  """Seeded inputs in the ONNX contract: the classifier sees N(0,1) 'normalised' pixels; the generator all labels."""
  rng = np.random.default_rng(seed)
  size = config.data.image_size
  if config.task == 'classifier':
    return {'input': rng.normal(size=(batch, 3, size, size)).astype(np.float32)}
  null = len(config.data.classes)
  return {
    'noise': rng.normal(size=(batch, 3, size, size)).astype(np.float32),
    'timestep': rng.uniform(size=batch).astype(np.float32),
    'breed': rng.integers(-1, null + 1, size=batch).astype(np.int64),
  }


def session(path: str, precise_int8: bool = False):
  """A CPU session; `precise_int8` picks the int8 matmul kernel whose results match the browser's."""
  import onnxruntime

  options = onnxruntime.SessionOptions()
  if precise_int8:
    options.add_session_config_entry(*PRECISE_INT8)
  return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def max_difference(path: str, config, forward) -> float:
  """The largest |ONNX Runtime - JAX| over seeded inputs with N=1 and N=3 (the batch axis is dynamic)."""
  onnx_session, jax_fn = session(path), jax.jit(forward)
  worst = 0.0
  for batch, seed in ((1, 0), (3, 1)):
    feeds = parity_inputs(config, batch, seed)
    got = onnx_session.run(None, feeds)[0]
    expected = np.asarray(jax_fn(*[np.asarray(v, np.int32) if v.dtype == np.int64 else v for v in feeds.values()]))
    if got.shape != expected.shape:
      raise ExportError(f'{os.path.basename(path)}: ONNX output {got.shape}, JAX {expected.shape}')
    worst = max(worst, float(np.max(np.abs(got - expected))))
  return worst


def quantize(source: str, target: str) -> None:
  """ONNX Runtime dynamic quantisation: int8 weights, activations quantised at run time."""
  from onnxruntime.quantization import QuantType, quantize_dynamic

  root = logging.getLogger()
  level = root.level
  root.setLevel(max(level, logging.ERROR))  # Mutes its generic 'consider pre-processing' warning.
  try:
    quantize_dynamic(source, target, weight_type=QuantType.QInt8)
  finally:
    root.setLevel(level)


def _validation_batch(config):
  """Up to INT8_CHECK_BATCH validation images (canvases), their sizes and labels, or the reason they cannot be read."""
  try:
    split = tinycats.data.load(config, splits=('val',)).splits['val']
  except (UserError, OSError) as e:  # The data is not on this machine (e.g. trained on Modal): say so.
    reason = f'the validation data could not be read ({type(e).__name__}: {e})'
    print(
      f'tinycats export: int8 accuracy not measured: {reason}; give --data-dir DIR where the data is here',
      file=sys.stderr,
    )
    return None, reason
  n = min(INT8_CHECK_BATCH, len(split))
  return (np.asarray(split.images[:n]), np.asarray(split.sizes[:n]), np.asarray(split.labels[:n])), None


def _run(onnx_session, feeds: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
  n = len(next(iter(feeds.values())))
  return np.concatenate(
    [onnx_session.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)]
  )


def quantization_report(config, float_path: str, int8_path: str) -> dict:
  """Sizes, and the int8 model against the float32 one on a validation batch (accuracy, or flow loss)."""
  report = {'float32_bytes': os.path.getsize(float_path), 'int8_bytes': os.path.getsize(int8_path)}
  report['size_ratio'] = round(report['int8_bytes'] / report['float32_bytes'], 4)
  batch, reason = _validation_batch(config)
  if batch is None:
    report['validation'] = {'measured': False, 'reason': reason}
    return report
  images, sizes, labels = batch
  sessions = {'float32': session(float_path), 'int8': session(int8_path, precise_int8=True)}
  report['int8_kernel'] = f'{PRECISE_INT8[0]}={PRECISE_INT8[1]} (the precise int8 matmul, as onnxruntime-web computes)'
  size, crop = config.data.image_size, augment.eval_crop(config.data)
  if config.task == 'classifier':
    x = np.asarray(augment.eval_transform(images, sizes, image_size=size, crop_fraction=crop, norm='imagenet'))
    x = x.transpose(0, 3, 1, 2)
    predictions = {k: _run(s, {'input': x}).argmax(-1) for k, s in sessions.items()}
    out = {f'{k}_accuracy': float(np.mean(p == labels)) for k, p in predictions.items()}
    out['agreement'] = float(np.mean(predictions['float32'] == predictions['int8']))
    out['accuracy_change'] = out['int8_accuracy'] - out['float32_accuracy']
  else:
    data = np.asarray(
      augment.eval_transform(images, sizes, image_size=size, crop_fraction=crop, norm=config.data.normalization)
    )
    data = data.transpose(0, 3, 1, 2)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=data.shape).astype(np.float32)
    t = rng.uniform(size=len(data)).astype(np.float32)
    x_t = np.asarray(flow.interpolate(data, noise, t))
    feeds = {'noise': x_t, 'timestep': t, 'breed': labels.astype(np.int64)}
    velocity = {k: _run(s, feeds) for k, s in sessions.items()}
    t_eps = config.flow.get('t_eps', 0.05) if config.flow.get('prediction', 'v') == 'x' else 0.0
    target = np.asarray(flow.target_velocity(data, noise, t, t_eps))
    out = {f'{k}_flow_loss': float(np.mean((v - target) ** 2)) for k, v in velocity.items()}
    out['flow_loss_change'] = out['int8_flow_loss'] - out['float32_flow_loss']
    out['max_velocity_difference'] = float(np.max(np.abs(velocity['int8'] - velocity['float32'])))
  report['validation'] = dict(measured=True, split='val', examples=len(labels), **out)
  return report


def require_export_packages() -> None:
  try:
    for name in ('jax2onnx', 'onnx', 'onnxruntime'):
      importlib.import_module(name)
  except ImportError as e:
    raise UserError(f"exporting needs the export extra ({e.name} is missing): pip install -e '.[export]'") from e


def export_onnx(
  workdir: str,
  out_dir: str,
  *,
  int8: bool = False,
  task: str | None = None,
  step: int | None = None,
  tolerance: float = TOLERANCE,
  data_dir: str | None = None,
) -> dict:
  """Writes the ONNX file(s) of a workdir's model into `out_dir` and updates `out_dir/models.json`.

  `task` ('classifier' or 'generator') refuses a workdir that holds the other. `data_dir`: where the run's data
  is on this machine, if not where its config says (the int8 check reads validation pictures).
  """
  require_export_packages()
  config, _, state, step = inference.load(workdir, task, step)  # A bad workdir fails before the folder is made.
  with folders.output_folder(out_dir):
    return write_onnx(config, state, step, out_dir, int8=int8, source=workdir, tolerance=tolerance, data_dir=data_dir)


def write_onnx(
  config,
  state,
  step: int,
  out_dir: str,
  *,
  int8: bool = False,
  source: str = '',
  tolerance: float = TOLERANCE,
  data_dir: str | None = None,
) -> dict:
  """`export_onnx` for a network already loaded (`inference.load`): convert, check, quantise, move in."""
  import onnx

  names = FILES[config.task]
  existing = manifest.read_models_json(out_dir)
  with folders.staging(out_dir) as tmp:
    model = float32_network(config, state)
    proto, forward, inputs = convert(config, model)
    float_path = os.path.join(tmp, names[0])
    onnx.save_model(proto, float_path)  # One self-contained file: what onnxruntime-web fetches.
    difference = max_difference(float_path, config, forward)
    report = {
      'workdir': os.path.abspath(source) if source else '',
      'step': step,
      'task': config.task,
      'inputs': inputs,
      'image_size': config.data.image_size,
      'classes': list(config.data.classes),
      'max_difference': difference,
      'tolerance': tolerance,
      'files': [names[0]],
    }
    if not difference <= tolerance:
      raise ExportError(
        f'{names[0]}: ONNX Runtime differs from the JAX model by {difference:.3g} '
        f'(tolerance {tolerance:g}); nothing was written to {out_dir}'
      )
    paths = {'float32': float_path}
    if int8:
      paths['int8'] = os.path.join(tmp, names[1])
      quantize(float_path, paths['int8'])
      data_config = tinycats.data.relocated(config, data_dir) if data_dir else config
      report['int8'] = quantization_report(data_config, float_path, paths['int8'])
      report['files'].append(names[1])
    info = {
      'step': step,
      'max_difference': difference,
      'tolerance': tolerance,
      **({'int8': report['int8']} if int8 else {}),
    }
    with open(os.path.join(tmp, 'models.json'), 'w') as f:
      json.dump(manifest.models_json(existing, config, paths, info), f, indent=2)
    folders.publish(tmp, report['files'] + ['models.json'], out_dir)  # models.json last: it names the files before it.
    stale = os.path.join(out_dir, names[1])
    if not int8 and os.path.exists(stale):  # After models.json stopped naming it: the page never loses a file.
      os.remove(stale)
      print(f'tinycats export: removed {stale} (an earlier int8 export); add --int8 to make a new one', file=sys.stderr)
  report['out_dir'] = os.path.abspath(out_dir)
  return report
