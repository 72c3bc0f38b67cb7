"""torchvision-layout weights into the NNX ResNets: numerical parity with PyTorch, strictness, hub ids.

torchvision cannot be installed beside the CPU torch wheel, so the reference ResNets are the plain-torch
ones of `benchmarks.torch_baseline`, with torchvision's module names; their state dicts are torchvision's.
"""

from __future__ import annotations

import hashlib
import http.server
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from tinycats import models, pretrained
from tinycats.pretrained import PretrainedError, fetch, load_torchvision, torch_shape, torchvision_key

IMAGE = 64


def torch_resnet(depth, seed=0, width=64, num_classes=1000):
  """torchvision's ResNet in plain torch (the benchmark's), eval mode, random weights and BatchNorm statistics."""
  torch = pytest.importorskip('torch', reason='torch (the dev extra) is needed for the PyTorch reference ResNets')
  from benchmarks import torch_baseline

  nn = torch.nn
  torch.manual_seed(seed)
  net = torch_baseline.resnet(depth, num_classes, width)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 2.0)
        m.num_batches_tracked.fill_(1234)
  return net.eval()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
  """A torchvision-layout ResNet18 state dict in safetensors made with numpy alone (no torch needed)."""
  rng = np.random.default_rng(0)
  model = models.resnet18(1000, width=64, dtype=jnp.float32, rngs=nnx.Rngs(0))
  weights = {
    torchvision_key(p): rng.normal(size=torch_shape(v.shape)).astype(np.float32)
    for p, v in nnx.to_flat_state(nnx.state(model))
  }
  weights['bn1.num_batches_tracked'] = np.array(7, np.int64)
  path = str(tmp_path_factory.mktemp('weights') / 'resnet18.safetensors')
  save_file(weights, path)
  return path


def assert_parity(net, model):
  """Same logits (float32, within 1e-4) and top-1 as the torch model on the same input, NCHW vs NHWC."""
  import torch

  x = np.random.default_rng(0).normal(size=(2, 3, IMAGE, IMAGE)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x)).numpy()
  model.eval()
  got = np.asarray(model(jnp.asarray(x.transpose(0, 2, 3, 1))))
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))


def test_torchvision_key():
  assert torchvision_key(('layer2', 0, 'downsample', 0, 'kernel')) == 'layer2.0.downsample.0.weight'
  assert torchvision_key(('layer2', 0, 'downsample', 1, 'scale')) == 'layer2.0.downsample.1.weight'
  assert torchvision_key(('bn1', 'var')) == 'bn1.running_var'
  assert torchvision_key(('fc', 'kernel')) == 'fc.weight'


def test_resnet18_parity_safetensors(tmp_path):
  net = torch_resnet(18)
  path = str(tmp_path / 'resnet18.safetensors')
  from safetensors.torch import save_file as save_torch

  save_torch({k: v.contiguous() for k, v in net.state_dict().items()}, path)
  model = models.resnet18(1000, dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert load_torchvision(model, path) is model
  assert_parity(net, model)


def test_resnet34_parity_pth(tmp_path):
  """ResNet34 through the .pth route, the state dict nested under 'state_dict' as training scripts save it."""
  net = torch_resnet(34, seed=1)
  import torch

  path = str(tmp_path / 'resnet34.pth')
  torch.save({'state_dict': net.state_dict(), 'epoch': 90}, path)
  model = load_torchvision(models.resnet34(1000, dtype=jnp.float32, rngs=nnx.Rngs(0)), path)
  assert_parity(net, model)


def test_layouts_and_float32_parameters_in_a_bfloat16_model(checkpoint):
  weights = load_file(checkpoint)
  model = load_torchvision(models.resnet18(1000, rngs=nnx.Rngs(0)), checkpoint)
  kernel = model.layer2[0].downsample[0].kernel[...]
  assert kernel.dtype == jnp.float32 and model.bn1.var[...].dtype == jnp.float32
  np.testing.assert_array_equal(kernel, weights['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.layer2[0].downsample[1].var[...], weights['layer2.0.downsample.1.running_var'])
  np.testing.assert_array_equal(model.fc.kernel[...], weights['fc.weight'].T)


def _edited(path, tmp_path, edit):
  weights = load_file(path)
  edit(weights)
  out = str(tmp_path / 'edited.safetensors')
  save_file(weights, out)
  return out


@pytest.mark.parametrize(
  'edit, named',
  [
    (lambda w: w.pop('layer3.1.bn2.running_var'), 'layer3.1.bn2.running_var (256,)'),
    (lambda w: w.update({'layer5.0.conv1.weight': np.zeros((1, 2, 3, 3), np.float32)}), 'layer5.0.conv1.weight'),
    (
      lambda w: w.update({'layer1.0.conv2.weight': np.zeros((64, 64, 1, 1), np.float32)}),
      'layer1.0.conv2.weight: checkpoint (64, 64, 1, 1), model (64, 64, 3, 3)',
    ),
  ],
  ids=['missing', 'unexpected', 'wrong-shape'],
)
def test_strict_loading_names_the_problem(checkpoint, tmp_path, edit, named):
  path = _edited(checkpoint, tmp_path, edit)
  with pytest.raises(PretrainedError) as error:
    load_torchvision(models.resnet18(1000, dtype=jnp.float32, rngs=nnx.Rngs(0)), path)
  assert named in str(error.value)


def test_not_strict_loads_the_rest(checkpoint, tmp_path, capsys):
  path = _edited(checkpoint, tmp_path, lambda w: w.pop('layer3.1.bn2.running_var'))
  model = load_torchvision(models.resnet18(1000, dtype=jnp.float32, rngs=nnx.Rngs(0)), path, strict=False)
  assert 'layer3.1.bn2.running_var' in capsys.readouterr().err
  np.testing.assert_array_equal(model.layer3[1].bn2.var[...], np.ones(256))  # left as initialised
  np.testing.assert_array_equal(model.fc.bias[...], load_file(path)['fc.bias'])


def test_head_replaced_when_classes_differ(checkpoint, capsys):
  fresh = models.resnet18(2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  model = load_torchvision(models.resnet18(2, dtype=jnp.float32, rngs=nnx.Rngs(0)), checkpoint)
  assert 'replaced the classification head: checkpoint has 1000 classes, model 2' in capsys.readouterr().err
  weights = load_file(checkpoint)
  np.testing.assert_array_equal(
    model.layer4[1].conv2.kernel[...], weights['layer4.1.conv2.weight'].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(model.layer4[1].bn2.mean[...], weights['layer4.1.bn2.running_mean'])
  np.testing.assert_array_equal(model.fc.kernel[...], fresh.fc.kernel[...])
  assert model.fc.kernel[...].shape == (512, 2)


def test_missing_file_says_what_to_do(tmp_path):
  with pytest.raises(PretrainedError, match="no such file.*pretrained=''"):
    fetch(str(tmp_path / 'resnet18.safetensors'))


class _FakeHub(http.server.BaseHTTPRequestHandler):
  """Answers hf_hub_download like the Hub: HEAD with commit, ETag and size headers; GET with the bytes."""

  files: dict[str, bytes] = {}
  requests: list[str] = []

  def _reply(self, body: bool):
    self.requests.append(f'{self.command} {self.path}')
    data = self.files.get(self.path)
    if data is None:
      self.send_response(404)
      self.send_header('X-Error-Code', 'RepoNotFound')
      self.send_header('Content-Length', '0')
      self.end_headers()
      return
    self.send_response(200)
    self.send_header('X-Repo-Commit', hashlib.sha1(b'fake commit').hexdigest())
    self.send_header('ETag', f'"{hashlib.sha256(data).hexdigest()}"')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    if body:
      self.wfile.write(data)

  def do_HEAD(self):
    self._reply(body=False)

  def do_GET(self):
    self._reply(body=True)

  def log_message(self, *args):
    pass


@pytest.fixture
def fake_hub(checkpoint):
  with open(checkpoint, 'rb') as f:
    _FakeHub.files = {'/someone/resnet18.tv_in1k/resolve/main/model.safetensors': f.read()}
  _FakeHub.requests = []
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _FakeHub)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()


def repo_requests():
  """The fake hub's requests for repo files (huggingface_hub also asks for /api/... registries)."""
  return [r for r in _FakeHub.requests if '/resolve/' in r]


def test_hub_id_downloads_into_the_cache(fake_hub, checkpoint, tmp_path, monkeypatch):
  monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{fake_hub.server_address[1]}')
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
  model = load_torchvision(models.resnet18(1000, dtype=jnp.float32, rngs=nnx.Rngs(0)), 'someone/resnet18.tv_in1k')
  url = '/someone/resnet18.tv_in1k/resolve/main/model.safetensors'
  assert repo_requests() == [f'HEAD {url}', f'GET {url}']
  np.testing.assert_array_equal(
    model.layer3[0].conv1.kernel[...], load_file(checkpoint)['layer3.0.conv1.weight'].transpose(2, 3, 1, 0)
  )
  cached = fetch('hf-hub:someone/resnet18.tv_in1k')
  assert cached.startswith(str(tmp_path / 'hub'))
  assert repo_requests() == [f'HEAD {url}', f'GET {url}', f'HEAD {url}']  # no second GET: served from the cache
  fake_hub.shutdown()
  fake_hub.server_close()
  assert fetch('someone/resnet18.tv_in1k') == cached  # the Hub unreachable: the cached file is used


def test_unknown_repo_says_what_to_do(fake_hub, tmp_path):
  with pytest.raises(PretrainedError, match=r"(?s)'someone/nothing'.*\.safetensors file elsewhere.*pretrained=''"):
    fetch('someone/nothing', cache_dir=str(tmp_path), endpoint=f'http://127.0.0.1:{fake_hub.server_address[1]}')


def test_hub_unreachable_says_what_to_do(tmp_path, monkeypatch):
  """No network and nothing cached. huggingface_hub retries with backoff (about 25 s): skip its waits."""
  import huggingface_hub.utils._http as hf_http

  monkeypatch.setattr(hf_http.time, 'sleep', lambda seconds: None)
  with pytest.raises(PretrainedError, match=r"(?s)timm/resnet18\.tv_in1k.*\.safetensors file elsewhere.*pretrained=''"):
    fetch('timm/resnet18.tv_in1k', cache_dir=str(tmp_path), endpoint='http://127.0.0.1:9')


def test_fine_tuning_starts_from_the_weights_with_a_frozen_backbone(image_folder, tmp_path):
  from conftest import tiny_config
  from safetensors.numpy import save_file

  from tinycats.train import loop, state as state_lib
  from tinycats.train.tasks import TASKS

  donor = models.resnet18(1000, width=8, dtype=jnp.float32, rngs=nnx.Rngs(5))
  weights = {
    pretrained.torchvision_key(path): pretrained.to_torch(v) for path, v in nnx.to_flat_state(nnx.state(donor))
  }
  save_file(weights, str(tmp_path / 'resnet18-w8.safetensors'))
  config = tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={image_folder}',
    f'--config.model.pretrained={tmp_path / "resnet18-w8.safetensors"}',
    '--config.train.epochs=1',
    '--config.train.freeze_epochs=1',
  )
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  graphdef, model_state, _ = state_lib.restore_model(
    str(tmp_path / 'run'), TASKS['classifier'](config, ['cat', 'other'])
  )
  model = nnx.merge(graphdef, model_state)
  # The backbone is the checkpoint's, untouched by the frozen epoch; the 2-class head was trained.
  np.testing.assert_array_equal(model.conv1.kernel[...], donor.conv1.kernel[...])
  np.testing.assert_array_equal(model.layer4[1].conv2.kernel[...], donor.layer4[1].conv2.kernel[...])
  assert model.fc.kernel.shape == (64, 2)
  fresh = models.resnet18(2, width=8, rngs=nnx.Rngs(config.seed))
  assert not np.allclose(model.fc.kernel[...], fresh.fc.kernel[...])


def test_backbone_learning_rate_scale_and_freeze():
  import ml_collections
  import optax

  from tinycats.train import step as step_lib
  from tinycats.train.tasks.classifier import head_or_backbone

  train = ml_collections.ConfigDict(dict(grad_clip=0.0, weight_decay=0.0, backbone_lr_scale=0.25, freeze_epochs=2.0))
  tx = step_lib.make_optimizer(train, optax.constant_schedule(0.1), steps_per_epoch=1, param_groups=head_or_backbone)
  params = {'fc': {'kernel': jnp.ones((2, 2))}, 'conv1': {'kernel': jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  moves = []
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    moves.append((float(updates['fc']['kernel'][0, 0]), float(updates['conv1']['kernel'][0, 0])))
  # Adam's first steps move by the learning rate: the head by 0.1; the backbone not at all while
  # frozen (steps 0 and 1), then by 0.25 x 0.1.
  np.testing.assert_allclose(moves, [(-0.1, 0.0), (-0.1, 0.0), (-0.1, -0.025)], rtol=1e-4, atol=1e-7)
  # From scratch a random backbone learns at the full rate from the first step.
  scratch = step_lib.make_optimizer(
    train, optax.constant_schedule(0.1), steps_per_epoch=1, fine_tuning=False, param_groups=head_or_backbone
  )
  updates, _ = scratch.update(grads, scratch.init(params), params)
  np.testing.assert_allclose(updates['conv1']['kernel'], -0.1, rtol=1e-4)
