import json

import pytest

from tinycats import config as config_lib, stored_config


def test_scratch_and_smoke_train_from_random_weights_with_their_own_schedule():
  real, scratch, smoke = (config_lib.load(f'configs/cats.py{arg}') for arg in ('', ':scratch', ':smoke'))
  assert real.model.name == scratch.model.name == smoke.model.name == 'resnet18'
  assert (real.data.image_size, real.data.source, real.model.pretrained) == (224, 'tfds', 'torchvision')
  assert scratch.model.pretrained == smoke.model.pretrained == ''
  assert scratch.data.image_size == 224 and scratch.train.epochs > real.train.epochs and scratch.data.recolor > 0
  assert smoke.data.image_size < real.data.image_size and smoke.model.width < real.model.width
  assert smoke.train.steps > 0  # A fixed budget: the same compute on 250 pictures or 3,000.


def test_overrides_take_the_field_type():
  c = config_lib.load(
    'configs/cats.py',
    [
      '--config.train.batch_size=64',
      'config.train.learning_rate=3e-4',
      '--config.data.flip=false',
      '--config.data.labels=breed',
    ],
  )
  assert c.train.batch_size == 64 and isinstance(c.train.batch_size, int)
  assert c.train.learning_rate == pytest.approx(3e-4)
  assert c.data.flip is False and c.data.labels == 'breed'


def test_one_parser_reads_overrides_off_a_command_line():
  overrides, rest = config_lib.split_overrides(
    [
      '--workdir',
      'w',
      '--config.train.batch_size=64',
      '--config.data.labels',
      'breed',
      '--config.model.pretrained=',
      '--config.data.flip',
      '--local',
      '--epochs=3',
    ]
  )
  assert overrides == ['train.batch_size=64', 'data.labels=breed', 'model.pretrained=', 'data.flip']
  assert rest == ['--workdir', 'w', '--local', '--epochs=3']
  assert config_lib.parse_override('--config.a.b=c=d') == ('a.b', 'c=d')
  with pytest.raises(config_lib.ConfigError, match='must look like --config.train.batch_size=64'):
    config_lib.load('configs/cats.py', overrides)  # `--config.data.flip` with no value.


def test_the_caller_config_is_not_modified():
  base = config_lib.load_config_file('configs/cats.py')
  config_lib.apply_overrides(base, ['train.batch_size=7'])
  assert base.train.batch_size == 128


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.train.batchsize=64', "unknown config field 'train.batchsize'; did you mean 'train.batch_size'"),
    ('--config.train.lr=0.1', "unknown config field 'train.lr'; did you mean 'train.learning_rate'"),
    ('--config.train.batch_size=lots', "bad value for config field 'train.batch_size': 'lots' is not an integer"),
    ('--config.train.batch_size=0', "'train.batch_size' must be > 0"),
    ('--config.data.val_min_per_class=-1', "'data.val_min_per_class' must be >= 0"),
    ('--config.data.labels=dogs', "'data.labels' is 'dogs'; allowed: species, breed"),
    ('--config.model.name=resnet50', 'allowed: resnet18, resnet34'),
    ('--config.model.dtype=float16', "'model.dtype' is 'float16'; allowed: auto, bfloat16, float32"),
    ('--config.model.dropout=1.5', "'model.dropout' must be in [0, 1)"),
    ('--config.data.source=folder', 'data.folder is empty'),
    ('--config.data.image_size=512', 'must not exceed data.cache_size'),
    ('--config.train=3', 'is a group'),
    ('--config.train.batch_size', 'must look like'),
  ],
)
def test_bad_fields_and_values_are_named(override, message):
  with pytest.raises(config_lib.ConfigError, match=None) as info:
    config_lib.load('configs/cats.py', [override])
  assert message in str(info.value)


@pytest.mark.parametrize(
  'spec, override, message',
  [
    ('configs/cats.py', '--config.model.name=dit', "model.name 'dit' does not fit task 'classifier'"),
    ('configs/dit.py', '--config.task=classifier', "model.name 'dit' does not fit task 'classifier'"),
    ('configs/dit.py', '--config.model.patch_size=24', 'data.image_size (128) must be a multiple of model.patch_size'),
    ('configs/dit.py', '--config.model.heads=5', 'model.width (384) must be a multiple of model.heads (5)'),
    ('configs/dit.py', '--config.model.patch_size=4', 'model.overlap (4) must be 0 to half of model.patch_size (4)'),
    ('configs/dit.py', '--config.train.grad_accum=3', 'must be a multiple of train.grad_accum (3)'),
    ('configs/dit.py', '--config.flow.timesteps=cosine', 'allowed: uniform, logit_normal'),
    ('configs/dit.py', '--config.sample.sampler=rk4', 'allowed: euler, heun'),
    ('configs/dit.py', '--config.flow.label_dropout=1', "'flow.label_dropout' must be in [0, 1)"),
    ('configs/dit.py', '--config.sample.guidance_interval=0.6,0.2', "'sample.guidance_interval' is [0.6, 0.2]"),
    ('configs/dit.py', '--config.sample.guidance_interval=0.1,1.5', '--config.sample.guidance_interval=0.1,1.0'),
    ('configs/dit.py', '--config.sample.guidance_interval=0.1', 'a pair 0 <= lo <= hi <= 1'),
  ],
)
def test_generator_config_errors_are_named(spec, override, message):
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.load(spec, [override])
  assert message in str(info.value)


def test_generator_configs_load():
  for arg in ('', ':smoke', ':smoke128', ':patch8'):
    c = config_lib.load(f'configs/dit.py{arg}')
    assert c.task == 'generator' and c.data.labels == 'cat_breeds' and c.data.normalization == 'symmetric'
  assert config_lib.load('configs/dit.py:patch8').model.patch_size == 8
  smoke128 = config_lib.load('configs/dit.py:smoke128')
  assert (smoke128.data.image_size, smoke128.model.patch_size, smoke128.model.width) == (128, 16, 96)


def test_a_generator_run_from_before_guidance_intervals_guides_every_step(tmp_path):
  config = config_lib.load('configs/dit.py', ['--config.sample.guidance_interval=0.1,1'])
  assert tuple(config.sample.guidance_interval) == (0.1, 1.0) and 'sample.guidance_interval' in (
    stored_config.CHANGEABLE_ON_RESUME
  )
  stored = config.to_dict()
  del stored['sample']['guidance_interval']  # What config.json held before the field existed.
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  loaded = stored_config.load_json(str(tmp_path / 'config.json'))
  assert tuple(loaded.sample.guidance_interval) == (0.0, 1.0)
  assert stored_config.resume_conflicts(loaded, config) == []  # Changeable on resume.


def test_config_file_errors():
  with pytest.raises(config_lib.ConfigError, match='not found'):
    config_lib.load('configs/nope.py')
  with pytest.raises(ValueError, match="unknown config argument 'huge'"):
    config_lib.load('configs/cats.py:huge')


def test_json_round_trip(tmp_path):
  c = config_lib.load('configs/cats.py:smoke')
  stored_config.save_json(c, str(tmp_path / 'config.json'))
  assert json.loads((tmp_path / 'config.json').read_text())['train']['batch_size'] == 32
  assert stored_config.load_json(str(tmp_path / 'config.json')).to_dict() == json.loads(json.dumps(c.to_dict()))
  with pytest.raises(config_lib.ConfigError, match='is this a tinycats workdir'):
    stored_config.load_json(str(tmp_path / 'missing.json'))


@pytest.mark.parametrize('spec, old', [('configs/cats.py', 'classify'), ('configs/dit.py', 'flow')])
def test_a_workdir_written_with_the_old_task_names_still_loads(tmp_path, spec, old):
  config = config_lib.load(spec)
  stored = config.to_dict()
  stored['task'] = old  # What config.json held before the tasks were named classifier and generator.
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(stored))
  loaded = stored_config.load_json(str(path))
  assert loaded.task == config.task and stored_config.resume_conflicts(loaded, config) == []


def test_a_misspelt_field_set_in_python_fails_where_it_is_set():
  """Loaded configs are locked (as ml_collections' config_flags locks them): `c.train.lr = 1` raises at once
  instead of training at the default rate; an existing field still takes any value of its type."""
  c = config_lib.load('configs/cats.py:smoke')
  with pytest.raises(AttributeError, match='"lr" does not exist .* locked'):
    c.train.lr = 1
  c.train.learning_rate = 1e-3
  assert config_lib.validate(c).train.learning_rate == 1e-3
  stored = stored_config.from_dict(c.to_dict())  # A workdir's or an export's config.json: locked too.
  with pytest.raises(AttributeError):
    stored.sample.cfg_scale = 2


def test_the_guidance_scale_has_one_name_and_the_old_one_says_the_new(tmp_path):
  """`sample.cfg` became `sample.guidance`: a run written before loads with its scale; an override, a
  keyword or a flag with the old name names the new one."""
  saved = config_lib.load('configs/dit.py:smoke').to_dict()
  saved['sample']['cfg'] = saved['sample'].pop('guidance') + 1.0
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(saved))
  old = stored_config.load_json(str(path))
  assert old.sample.guidance == saved['sample']['cfg'] and 'cfg' not in old.sample
  with pytest.raises(config_lib.ConfigError, match="'sample.cfg' is now 'sample.guidance'"):
    config_lib.load('configs/dit.py:smoke', ['--config.sample.cfg=2'])
