"""tinycats: a ResNet classifier and a flow-matching DiT for Oxford-IIIT Pet, in JAX/Flax.

    from tinycats import Classifier, Generator
    clf = Classifier.load('workdirs/cats-...')
    images = Generator.load('workdirs/dit-...').sample(['Bengal', 'other'], steps=50, cfg=1.5, seed=0)
"""
from tinycats import models
from tinycats.classifier import Classifier
from tinycats.generator import Generator

__all__ = ['Classifier', 'Generator', 'models']
__version__ = '0.1.0'
