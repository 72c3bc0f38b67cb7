"""Exports: ONNX that meets the web page's contract (parity, dynamic batch, int8), Hub repos that load back."""

from __future__ import annotations

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import LEARNING
from fake_hub import FakeHub
from flax import nnx

from tinycats import Classifier, Generator, cli, inference, models, pretrained, stored_config
from tinycats.data import augment
from tinycats.errors import UserError
from tinycats.export import card, hub, manifest, onnx as onnx_export, weights
from tinycats.inference import ExportError

ort = pytest.importorskip('onnxruntime', reason="the export extra (pip install -e '.[export]') is needed")
onnx = pytest.importorskip('onnx')

TOKEN = 'hf_test_token'
SIZE = int(next(a for a in LEARNING if 'image_size' in a).rpartition('=')[2])  # The classifier run's input.


@pytest.fixture(scope='module')
def runs(folder_run, generator_run, tmp_path_factory):
  """{'classifier': workdir, 'generator': workdir}: copies of the suite's tiny trained runs (cat/other 64 px;
  4 shapes 16 px), so that an `evaluate` elsewhere (another xdist worker) cannot change the eval.json read here."""
  root = tmp_path_factory.mktemp('runs')
  return {
    kind: str(shutil.copytree(workdir, root / kind))
    for kind, workdir in (('classifier', folder_run[0]), ('generator', generator_run[0]))
  }


@pytest.fixture(scope='module')
def hub_server():
  with FakeHub(token=TOKEN) as server:
    yield server


@pytest.fixture(scope='module')
def exports(runs, hub_server, tmp_path_factory):
  """Each run exported to the fake Hub with int8 ONNX, its folder kept: {'classifier': (folder, result), ...}."""
  out = {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('HF_TOKEN', TOKEN)
    for kind, repo in (('classifier', 'someone/tiny-cats'), ('generator', 'someone/tiny-dit')):
      folder = str(tmp_path_factory.mktemp(f'{kind}-export'))
      out[kind] = folder, hub.export_hub(runs[kind], repo, endpoint=hub_server.endpoint, out_dir=folder, int8=True)
  return out


def onnx_io(path):
  """{name: (element type, dims)} of a model's inputs and outputs."""
  model = onnx.load(path)
  describe = lambda v: (
    v.type.tensor_type.elem_type,
    [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
  )
  return ({v.name: describe(v) for v in model.graph.input}, {v.name: describe(v) for v in model.graph.output})


def reference(workdir):
  """(config, eval-mode float32 network) built here from the checkpoint, independently of the exporter."""
  import ml_collections

  task = json.load(open(os.path.join(workdir, 'config.json')))['task']
  config, graphdef, state, _ = inference.load(workdir, task)  # The generator's EMA network.
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  model_config.dtype = 'float32'  # Float32 compute; the parameters are float32 already.
  if task == 'generator':
    net = models.create_generator(
      model_config,
      len(config.data.classes),
      config.data.image_size,
      prediction=config.flow.get('prediction', 'v'),
      t_eps=config.flow.get('t_eps', 0.05),
    )
  else:
    net = models.create_classifier(model_config, len(config.data.classes))
  nnx.update(net, state)
  net.eval()
  return config, net


def jitted(net):
  """net(*args) compiled once: eager op-by-op dispatch of the DiT takes seconds on CPU."""
  graphdef, state = nnx.split(net)
  forward = jax.jit(lambda st, *args: nnx.merge(graphdef, st)(*args))
  return lambda *args: forward(state, *args)


def test_classifier_onnx_meets_the_contract(exports, runs):
  folder, _ = exports['classifier']
  inputs, outputs = onnx_io(os.path.join(folder, 'cats.onnx'))
  assert inputs == {'input': (onnx.TensorProto.FLOAT, ['batch_size', 3, SIZE, SIZE])}
  assert outputs == {'output': (onnx.TensorProto.FLOAT, ['batch_size', 2])}
  config, net = reference(runs['classifier'])
  net = jitted(net)
  session = ort.InferenceSession(os.path.join(folder, 'cats.onnx'))
  for n in (1, 3):
    x = np.random.default_rng(n).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)
    expected = np.asarray(net(jnp.asarray(x.transpose(0, 2, 3, 1))))
    got = session.run(None, {'input': x})[0]
    assert got.shape == (n, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_classifier_onnx_agrees_with_the_library_on_real_images(exports, runs, image_folder):
  """ImageNet-normalised NCHW crops into ONNX == Classifier.predict (bfloat16 compute) on the same images."""
  import tinycats.data

  folder, _ = exports['classifier']
  clf = Classifier.load(runs['classifier'])
  val = tinycats.data.load(clf.config, splits=('val',)).splits['val']
  n = min(24, len(val))
  x = np.asarray(
    augment.eval_transform(
      val.images[:n], val.sizes[:n], image_size=SIZE, crop_fraction=augment.eval_crop(clf.config.data), norm='imagenet'
    )
  )
  x = x.transpose(0, 3, 1, 2)
  logits = ort.InferenceSession(os.path.join(folder, 'cats.onnx')).run(None, {'input': x})[0]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  library = clf.predict([val.image(i) for i in range(n)])  # Whole pictures, fitted as the cache fits them.
  np.testing.assert_allclose(probs, library, atol=0.03)  # bfloat16 vs float32 compute.
  assert np.mean(probs.argmax(-1) == library.argmax(-1)) >= 0.95


def test_generator_onnx_meets_the_contract(exports, runs):
  folder, _ = exports['generator']
  inputs, outputs = onnx_io(os.path.join(folder, 'generator.onnx'))
  assert inputs == {
    'noise': (onnx.TensorProto.FLOAT, ['batch_size', 3, 16, 16]),
    'timestep': (onnx.TensorProto.FLOAT, ['batch_size']),
    'breed': (onnx.TensorProto.INT64, ['batch_size']),
  }
  assert outputs == {'velocity': (onnx.TensorProto.FLOAT, ['batch_size', 3, 16, 16])}
  config, net = reference(runs['generator'])
  net = jitted(net)
  session = ort.InferenceSession(os.path.join(folder, 'generator.onnx'))
  rng = np.random.default_rng(0)
  for breed in ([2], [0, 3, 4]):  # 4 = the null label
    n = len(breed)
    noise, t = rng.normal(size=(n, 3, 16, 16)).astype(np.float32), rng.uniform(size=n).astype(np.float32)
    got = session.run(None, {'noise': noise, 'timestep': t, 'breed': np.array(breed, np.int64)})[0]
    expected = np.asarray(net(jnp.asarray(noise.transpose(0, 2, 3, 1)), jnp.asarray(t), jnp.asarray(breed)))
    np.testing.assert_allclose(got, expected.transpose(0, 3, 1, 2), atol=1e-4, rtol=0)
  null = session.run(None, {'noise': noise, 'timestep': t, 'breed': np.full(3, 4, np.int64)})[0]
  minus_one = session.run(None, {'noise': noise, 'timestep': t, 'breed': np.full(3, -1, np.int64)})[0]
  np.testing.assert_array_equal(minus_one, null)  # The page sends -1 for its unconditional pass.


def euler_with_guidance(session, noise_nchw, breeds, steps, guidance):
  """The web page's loop in numpy: guidance outside the graph, x += dt * v from t = 0 to 1."""
  x = noise_nchw.copy()
  n = len(breeds)
  for i in range(steps):
    t = np.full(n, i / steps, np.float32)
    v_label = session.run(None, {'noise': x, 'timestep': t, 'breed': np.asarray(breeds, np.int64)})[0]
    v_null = session.run(None, {'noise': x, 'timestep': t, 'breed': np.full(n, -1, np.int64)})[0]
    x = x + (1.0 / steps) * (v_null + guidance * (v_label - v_null))
  return x


def test_onnx_euler_loop_gives_the_generators_images(exports, runs):
  folder, _ = exports['generator']
  session = ort.InferenceSession(os.path.join(folder, 'generator.onnx'))
  labels, steps, guidance = [0, 1, 2, 0], 6, 2.0
  noise = np.random.default_rng(3).normal(size=(4, 16, 16, 3)).astype(np.float32)
  x = euler_with_guidance(session, noise.transpose(0, 3, 1, 2), labels, steps, guidance)
  from_onnx = augment.to_uint8(x.transpose(0, 2, 3, 1), 'symmetric')
  config, net = reference(runs['generator'])
  graphdef, state = nnx.split(net)
  every = dict(
    steps=steps, guidance=guidance, sampler='euler', noise=noise, guidance_interval=(0.0, 1.0)
  )  # The loop's guidance.
  float32 = Generator(config, graphdef, state, 0).sample(labels, **every)
  difference = np.abs(from_onnx.astype(int) - float32)
  assert difference.max() <= 1 and difference.mean() < 0.01  # The same images up to float rounding.
  library = Generator.load(runs['generator']).sample(labels, **every)
  assert np.abs(from_onnx.astype(int) - library).mean() < 2.0  # The bfloat16 library sampler: near, not equal.


def test_int8_models_are_smaller_and_reported(exports):
  for kind, name, quantized in (
    ('classifier', 'cats.onnx', 'cats_quantized.onnx'),
    ('generator', 'generator.onnx', 'generator_quantized.onnx'),
  ):
    folder, result = exports[kind]
    report = result['onnx']['int8']
    assert report['int8_kernel'].startswith('session.x64quantprecision=1')  # What the browser computes.
    assert report['int8_bytes'] == os.path.getsize(os.path.join(folder, quantized))
    assert report['float32_bytes'] == os.path.getsize(os.path.join(folder, name))
    assert report['int8_bytes'] < 0.6 * report['float32_bytes']
    assert report['validation']['measured'] and report['validation']['examples'] > 0
    session = ort.InferenceSession(os.path.join(folder, quantized))
    assert [i.name for i in session.get_inputs()] == [
      i.name for i in ort.InferenceSession(os.path.join(folder, name)).get_inputs()
    ]
  classifier = exports['classifier'][1]['onnx']['int8']['validation']
  assert classifier['agreement'] >= 0.9 and abs(classifier['accuracy_change']) <= 0.1  # int8 keeps the predictions.
  generator = exports['generator'][1]['onnx']['int8']['validation']
  assert abs(generator['flow_loss_change']) <= 0.1 * generator['float32_flow_loss']


def test_int8_report_measures_the_exported_model(exports, runs):
  """The report's float32 accuracy is what cats.onnx scores on the same validation images, recomputed here."""
  import tinycats.data

  folder, result = exports['classifier']
  report = result['onnx']['int8']['validation']
  config = Classifier.load(runs['classifier']).config
  val = tinycats.data.load(config, splits=('val',)).splits['val']
  n = report['examples']
  x = np.asarray(
    augment.eval_transform(
      val.images[:n], val.sizes[:n], image_size=SIZE, crop_fraction=augment.eval_crop(config.data), norm='imagenet'
    )
  )
  x = x.transpose(0, 3, 1, 2)
  labels = val.labels[:n]
  for name, key in (('cats.onnx', 'float32_accuracy'), ('cats_quantized.onnx', 'int8_accuracy')):
    predicted = ort.InferenceSession(os.path.join(folder, name)).run(None, {'input': x})[0].argmax(-1)
    assert np.mean(predicted == labels) == pytest.approx(report[key]), name


def test_models_json_describes_both_models_in_one_folder(exports, runs, tmp_path, capsys):
  """The generator exported by the CLI, without --int8, into a site folder holding the classifier's export and an
  older generator_quantized.onnx: one models.json for both models, and no stale int8 generator left to load."""
  import shutil

  folder = str(tmp_path / 'site')
  shutil.copytree(exports['classifier'][0], folder)
  shutil.copy(os.path.join(exports['generator'][0], 'generator_quantized.onnx'), folder)
  with pytest.raises(SystemExit) as done:
    cli.main(['export', 'onnx', '--workdir', runs['generator'], '--out-dir', folder])
  assert done.value.code == 0
  captured = capsys.readouterr()
  printed = json.loads(captured.out.strip().splitlines()[-1])
  assert 'max difference' in captured.err and printed['max_difference'] <= 1e-4
  assert not os.path.exists(os.path.join(folder, 'generator_quantized.onnx'))
  spec = json.load(open(os.path.join(folder, 'models.json')))
  classifier, generator = spec['models']['classifier'], spec['models']['generator']
  assert classifier['original']['path'] == 'cats.onnx' and classifier['quantized']['path'] == 'cats_quantized.onnx'
  assert 'quantized' not in generator
  for entry in (classifier['original'], classifier['quantized'], generator):
    assert entry['sizeBytes'] == os.path.getsize(os.path.join(folder, entry['path']))
  for name, section in (('cats.onnx', spec['classifier']), ('generator.onnx', spec['generator'])):
    inputs, outputs = onnx_io(os.path.join(folder, name))  # models.json says what the files are.
    listed = section['inputs'] if 'inputs' in section else [section['input']]
    assert {i['name']: i['shape'] for i in listed} == {k: v[1] for k, v in inputs.items()}
    assert {section['output']['name']: section['output']['shape']} == {k: v[1] for k, v in outputs.items()}
  assert spec['classifier']['input']['normalization']['mean'] == [0.485, 0.456, 0.406]
  policy = lambda section: {k: spec[section]['preprocess'][k] for k in ('crop', 'crop_fraction', 'resize', 'size')}
  assert policy('classifier') == {
    'crop': 'center_square',
    'crop_fraction': 0.875,
    'resize': 'bilinear, antialiased',
    'size': SIZE,
  }  # configs/cats.py's data.eval_crop.
  assert policy('generator') == {
    'crop': 'center_square',
    'crop_fraction': 1.0,
    'resize': 'bilinear, antialiased',
    'size': 16,
  }
  assert spec['classifier']['output']['classes'] == ['cat', 'other']
  sampling = spec['generator']['sampling']
  # The run's own sample.* (conftest's tiny run: 10 Euler steps, guidance 2 on t in [0.25, 0.8]): the page's default.
  assert {k: v for k, v in sampling.items() if k != 'description'} == {
    'method': 'Euler integration',
    'sampler': 'euler',
    'steps': 10,
    'guidance': 2.0,
    'guidanceInterval': [0.25, 0.8],
    'nullLabel': 4,
  }
  assert [c['name'] for c in spec['generator_breeds']['classes']] == ['circle', 'cross', 'square', 'triangle']
  assert spec['recommended'] == {'classifier': 'quantized', 'generator': 'generator'}


def front_matter(text: str) -> dict:
  assert text.startswith('---\n')
  return yaml.safe_load(text.split('---\n')[1])


def test_hub_repo_holds_the_files_and_a_card_from_eval_json(exports, runs, hub_server):
  for kind, repo in (('classifier', 'someone/tiny-cats'), ('generator', 'someone/tiny-dit')):
    folder, result = exports[kind]
    files = hub_server.repos[repo]
    expected = {'model.safetensors', 'config.json', 'README.md', 'models.json'}
    expected |= (
      {'model_torchvision.safetensors', 'cats.onnx', 'cats_quantized.onnx'}
      if kind == 'classifier'
      else {'samples.png', 'generator.onnx', 'generator_quantized.onnx'}
    )
    assert set(files) == expected
    commits = [c for c in hub_server.commits if c[0] == repo]
    assert len(commits) == 1 and set(commits[0][2]) == expected  # Everything in one commit.
    for name in files:
      assert files[name] == open(os.path.join(folder, name), 'rb').read()
    evaluated = json.load(open(os.path.join(runs[kind], 'eval.json')))
    card = front_matter(files['README.md'].decode())
    assert card['license'] == 'cc-by-sa-4.0' and card['library_name'] == 'tinycats'
    metrics = card['model-index'][0]['results'][0]['metrics']
    expected = (
      [evaluated['accuracy'], evaluated['balanced_accuracy']]
      if kind == 'classifier'
      else [evaluated['flow_loss']]
      + [
        evaluated['samples'][k]
        for k in ('conditional_accuracy', 'frechet_distance', 'species_accuracy', 'cat_rate')
        if k in evaluated.get('samples', {})
      ]
    )  # Sample metrics exist once `evaluate --classifier` has run.
    assert [m['value'] for m in metrics] == expected  # What was measured, nothing else.
    assert card['pipeline_tag'] == (
      'image-classification' if kind == 'classifier' else 'unconditional-image-generation'
    )
    text = files['README.md'].decode()
    assert '| `README.md` | this model card |' in text
    assert f'validation {"balanced accuracy" if kind == "classifier" else "flow loss"}' in text
    run_config = json.load(open(os.path.join(runs[kind], 'config.json')))
    if run_config['train'].get('steps'):  # A step budget: the card says so, and the epochs it made.
      assert re.search(r'[\d,]+ steps \(about \d+ epochs of [\d,]+ images\)', text), text
      assert f'{run_config["train"]["epochs"]} epochs, batch' not in text
    config = json.loads(files['config.json'])
    assert config['metrics'] == evaluated and config['step'] == evaluated['step']
    assert config['classes'] == (
      ['cat', 'other'] if kind == 'classifier' else ['circle', 'cross', 'square', 'triangle']
    )


def test_models_load_back_from_the_hub(exports, runs, hub_server, tmp_path, monkeypatch):
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub-cache'))
  images = np.random.default_rng(0).integers(0, 255, size=(5, 40, 40, 3), dtype=np.uint8)
  original, loaded = (
    Classifier.load(runs['classifier']),
    Classifier.load('someone/tiny-cats', endpoint=hub_server.endpoint),
  )
  assert loaded.classes == original.classes and loaded.step == original.step
  np.testing.assert_array_equal(loaded.predict(images), original.predict(images))
  original, loaded = Generator.load(runs['generator']), Generator.load('someone/tiny-dit', endpoint=hub_server.endpoint)
  np.testing.assert_array_equal(
    loaded.sample([0, 2, 1], steps=3, guidance=2.0, seed=4), original.sample([0, 2, 1], steps=3, guidance=2.0, seed=4)
  )
  folder, _ = exports['generator']
  np.testing.assert_array_equal(
    Generator.load(folder).sample([1], steps=2, seed=0), original.sample([1], steps=2, seed=0)
  )  # A local export folder loads the same.


def test_torchvision_weights_round_trip_and_load_in_torch(exports, runs):
  folder, _ = exports['classifier']
  path = os.path.join(folder, weights.TORCHVISION_WEIGHTS)
  config, _, trained, _ = inference.load(runs['classifier'], 'classifier')
  fresh = models.create_classifier(config.model, 2, seed=9)
  pretrained.load_torchvision(fresh, path)  # The converter of the pretrained-weights path, strict.
  for (p, a), (q, b) in zip(nnx.to_flat_state(nnx.state(fresh)), nnx.to_flat_state(trained)):
    assert p == q
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))
  torch = pytest.importorskip('torch')
  from safetensors.torch import load_file
  from test_pretrained import torch_resnet

  net = torch_resnet(18, width=8, num_classes=2)
  net.load_state_dict(load_file(path), strict=True)
  x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
  session = ort.InferenceSession(os.path.join(folder, 'cats.onnx'))
  with torch.no_grad():
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), session.run(None, {'input': x})[0], atol=1e-4)


def test_upload_retries_a_transient_failure(tmp_path, monkeypatch):
  import huggingface_hub.utils._http as hf_http

  monkeypatch.setattr(hf_http.time, 'sleep', lambda seconds: None)  # Its back-off waits.
  folder = tmp_path / 'repo'
  folder.mkdir()
  (folder / 'README.md').write_text('---\nlicense: mit\n---\nhello\n')
  (folder / 'stray.txt').write_text('not part of the export')
  with FakeHub(token=TOKEN, fail_commits=1) as server:
    url = hub.upload(str(folder), 'someone/retry', token=TOKEN, files=['README.md'], endpoint=server.endpoint)
    assert server.repos['someone/retry'] == {'README.md': b'---\nlicense: mit\n---\nhello\n'}  # Only the listed files.
    assert len([r for r in server.requests if '/commit/' in r]) == 2  # The 500, then the retried commit.
    assert url.startswith(f'{server.endpoint}/someone/retry/commit/')
    before = len(server.requests)
    with pytest.raises(ExportError, match='not valid.*complete in'):
      hub.upload(str(folder), 'someone/retry', token='hf_wrong', endpoint=server.endpoint)
    after = server.requests[before:]
    assert after.count('POST /api/repos/create') == 1 and not any('/commit/' in r for r in after)  # No retry.


def test_an_export_deletes_what_an_older_export_left_and_nothing_else_and_makes_it_private(runs):
  old = {
    'cats_quantized.onnx': b'an older int8 model',
    'samples.png': b'a generator once exported here',
    'notes.md': b"the owner's own file",
  }
  with FakeHub(token=TOKEN) as server, pytest.MonkeyPatch.context() as mp:
    mp.setenv('HF_TOKEN', TOKEN)
    server.repos['someone/again'], server.private['someone/again'] = dict(old), False
    result = hub.export_hub(runs['classifier'], 'someone/again', endpoint=server.endpoint, private=True)  # No --int8.
    assert set(server.repos['someone/again']) == set(result['files']) | {'notes.md'}
    assert server.private['someone/again']  # The existing public repo, made private as asked.
    ((_, _, added, deleted),) = server.commits  # One commit adds and deletes.
    assert set(added) == set(result['files']) and sorted(deleted) == ['cats_quantized.onnx', 'samples.png']


def test_the_pages_sampling_defaults_are_the_runs(runs):
  """models.json's `generator.sampling` follows the workdir's sample.*; a run from before guidance intervals
  (config.json without one) guides every step."""
  saved = json.load(open(os.path.join(runs['generator'], 'config.json')))
  saved['sample'].update(sampler='heun', steps=7, guidance=3.5, guidance_interval=[0.1, 1.0])
  assert manifest.page_sampling(stored_config.from_dict(saved)) == {
    'method': 'Heun integration',
    'sampler': 'heun',
    'steps': 7,
    'guidance': 3.5,
    'guidanceInterval': [0.1, 1.0],
  }
  del saved['sample']['guidance_interval']
  assert manifest.page_sampling(stored_config.from_dict(saved))['guidanceInterval'] == [0.0, 1.0]


def test_card_metrics_only_from_an_eval_json_of_the_exported_step(tmp_path):
  (tmp_path / 'eval.json').write_text(json.dumps({'step': 5, 'accuracy': 0.9, 'split': 'test'}))
  assert card.read_eval(str(tmp_path), 5) == ({'step': 5, 'accuracy': 0.9, 'split': 'test'}, '')
  report, why = card.read_eval(str(tmp_path), 7)
  assert report == {} and 'measured step 5, but the export is step 7' in why
  report, why = card.read_eval(str(tmp_path / 'elsewhere'), 7)
  assert report == {} and 'tinycats evaluate' in why


def test_missing_token_fails_before_any_work(runs, tmp_path, monkeypatch):
  import huggingface_hub.constants

  monkeypatch.delenv('HF_TOKEN', raising=False)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-login' / 'token'))
  monkeypatch.setattr(inference, 'load', lambda *a, **k: pytest.fail('worked before checking the token'))
  with pytest.raises(UserError, match='HF_TOKEN'):
    hub.export_hub(runs['classifier'], 'someone/x', out_dir=str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')


def test_bad_inputs_are_clear_errors_and_write_nothing(runs, tmp_path, capsys):
  empty = tmp_path / 'untrained'
  empty.mkdir()
  (empty / 'config.json').write_text(open(os.path.join(runs['classifier'], 'config.json')).read())
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    onnx_export.export_onnx(str(empty), str(tmp_path / 'a'))
  assert not os.path.exists(tmp_path / 'a')  # Nothing made for an export that could not start.
  with pytest.raises(UserError, match="holds a 'classifier' run, not a generator"):
    onnx_export.export_onnx(runs['classifier'], str(tmp_path / 'b'), task='generator')
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  with pytest.raises(ExportError, match='cannot write to'):
    onnx_export.export_onnx(runs['classifier'], str(blocker / 'out'))
  with pytest.raises(SystemExit) as done:
    cli.main(['export', 'onnx', '--workdir', str(tmp_path / 'nowhere'), '--out-dir', str(tmp_path / 'c')])
  assert done.value.code == 2 and 'tinycats export: error:' in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match='no such workdir'):
    Classifier.load('tests/no-such-run')  # A mistyped local path is not sent to the Hub.


def test_a_failed_parity_check_leaves_nothing(runs, tmp_path):
  out = tmp_path / 'site'
  out.mkdir()
  (out / 'index.html').write_text('the page')
  with pytest.raises(ExportError, match='differs from the JAX model'):
    onnx_export.export_onnx(runs['generator'], str(out), tolerance=0.0)
  assert os.listdir(out) == ['index.html']  # No ONNX file, no models.json, no staging folder.
  with pytest.raises(ExportError, match='differs from the JAX model'):
    onnx_export.export_onnx(runs['generator'], str(tmp_path / 'new'), tolerance=0.0)
  assert not os.path.exists(tmp_path / 'new')  # A folder the failed export made is gone again.


def test_every_dit_block_option_and_x_prediction_export_within_the_tolerance(tmp_path):
  """The options the recipes may turn on (RMSNorm, QK-norm, SwiGLU, RoPE, bottleneck, class tokens, overlapping
  output tiles, x-prediction) convert with jax2onnx and match JAX within the exporter's tolerance, at N=1 and N=3."""
  import ml_collections
  import onnx

  config = ml_collections.ConfigDict(dict(task='generator', data=dict(image_size=16, classes=['a', 'b', 'c'])))
  net = models.DiT(
    image_size=16,
    patch_size=4,
    width=32,
    depth=2,
    heads=2,
    num_classes=3,
    norm='rmsnorm',
    qk_norm=True,
    mlp='swiglu',
    rope=True,
    bottleneck=8,
    class_tokens=2,
    class_token_block=1,
    overlap=1,
    prediction='x',
    dtype=jnp.float32,
    rngs=nnx.Rngs(0),
  )
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  rng = np.random.default_rng(0)  # Every parameter moved, so the zero-initialised layers take part.
  params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
  net = nnx.merge(graphdef, params, rest)
  net.eval()
  proto, forward, _ = onnx_export.convert(config, net)
  path = str(tmp_path / 'generator.onnx')
  onnx.save(proto, path)
  assert onnx_export.max_difference(path, config, forward) < onnx_export.TOLERANCE
