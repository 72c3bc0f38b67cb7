"""tinycats: a ResNet classifier and a flow-matching DiT for Oxford-IIIT Pet, in JAX/Flax.

from tinycats import Classifier, Generator, load_config, train_and_evaluate, export_onnx
config = load_config('configs/cats.py:smoke', ['--config.train.epochs=1'])
train_and_evaluate(config, 'workdirs/smoke')
clf = Classifier.load('workdirs/smoke')            # or an export folder, or a Hub repo id
images = Generator.load('workdirs/dit').sample(['Bengal', 'other'], steps=50, cfg=1.5, seed=0)
export_onnx('workdirs/smoke', 'site/models', int8=True)
"""

from tinycats import models
from tinycats.classifier import Classifier
from tinycats.config import load as load_config
from tinycats.export.onnx import export_onnx
from tinycats.generator import Generator
from tinycats.train.loop import train_and_evaluate

__all__ = ['Classifier', 'Generator', 'export_onnx', 'load_config', 'models', 'train_and_evaluate']
__version__ = '0.1.0'
