"""tinycats: a ResNet classifier and a flow-matching DiT for Oxford-IIIT Pet, in JAX/Flax.

from tinycats import Classifier, Generator, load_config, train_and_evaluate, export_onnx
config = load_config('configs/cats.py:smoke', ['--config.train.epochs=1'])
train_and_evaluate(config, 'workdirs/smoke')
clf = Classifier.load('workdirs/smoke')            # or an export folder, or a Hub repo id
images = Generator.load('workdirs/dit').sample(['Bengal', 'other'], steps=50, guidance=1.5, seed=0)
export_onnx('workdirs/smoke', 'site/models', int8=True)

The names load on first use (PEP 562), so `import tinycats` (and `tinycats --help`) does not import JAX.
"""

import importlib

# Each public name and the module that defines it.
_PUBLIC = {
  'Classifier': ('tinycats.classifier', 'Classifier'),
  'Generator': ('tinycats.generator', 'Generator'),
  'export_onnx': ('tinycats.export.onnx', 'export_onnx'),
  'load_config': ('tinycats.config', 'load'),
  'models': ('tinycats.models', None),
  'train_and_evaluate': ('tinycats.train.loop', 'train_and_evaluate'),
}
__all__ = sorted(_PUBLIC)
__version__ = '0.1.0'


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module_name, attribute = _PUBLIC[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value  # Looked up once.
  return value


def __dir__():
  return sorted(set(globals()) | set(_PUBLIC))
