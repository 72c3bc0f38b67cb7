"""tinycats: a ResNet classifier and a flow-matching DiT for Oxford-IIIT Pet, in JAX/Flax.

    from tinycats import Classifier, models
    clf = Classifier.load('workdirs/cats-...')
"""
from tinycats import models
from tinycats.classifier import Classifier

__all__ = ['Classifier', 'models']
__version__ = '0.1.0'
