"""The classifier recipe: ImageNet-style ResNet18 fine-tuned on Oxford-IIIT Pet, cat vs other.

Three variants, one file:
- `configs/cats.py`: the real run, fine-tuning torchvision's ImageNet weights (224 px, the whole TFDS
  train split, a GPU).
- `configs/cats.py:scratch`: the same network and data from random weights, with a from-scratch
  schedule and augmentation (a GPU). `model.pretrained=''` alone keeps the fine-tuning schedule, which
  a random network learns poorly from: use this variant instead.
- `configs/cats.py:smoke`: from scratch at CPU size: ResNet18 at a quarter width (16), 96 px, a fixed
  1,000 steps of 32 whatever the data's size (minutes on 2 CPU cores). It needs no network and no
  pretrained weights, and learns shapes, not colours (BENCHMARKS.md, 'Quality').
Override any field on the command line: `--config.train.batch_size=64`.
"""

import common  # configs/common.py (the loader puts configs/ on the path).


def get_config(arg=None):
  c = common.run_config('classifier', 'cats')
  c.model.name = 'resnet18'  # resnet18 | resnet34
  c.model.width = 64  # Stem width; torchvision's ResNets use 64.
  c.model.dropout = 0.2  # Before the linear head.
  # Compute dtype: auto | bfloat16 | float32; 'auto' is bfloat16 on a GPU or TPU and float32 on a CPU (XLA's
  # bfloat16 CPU kernels are slower, BENCHMARKS.md). Parameters and BatchNorm statistics stay float32.
  c.model.dtype = 'auto'
  # Starting weights: 'torchvision' = torchvision's ImageNet weights for model.name (from the Hub,
  # timm/<name>.tv_in1k, cached), a .safetensors/.pth path or another hub id; '' = from scratch.
  c.model.pretrained = 'torchvision'

  c.data = common.data_config(
    labels='species',
    val_fraction=0.1,
    # Validation chooses the best checkpoint by balanced accuracy, which needs every class in it.
    val_min_per_class=10,
    image_size=224,
    # A 500x375 photo keeps 320x240, so the evaluation crop (0.875 x 240 = 210 px) is resized up a little to 224.
    cache_size=320,
    eval_crop=0.875,  # torchvision's Resize(256) + CenterCrop(224).
    normalization='imagenet',  # What torchvision's ImageNet weights expect.
  )
  c.data.crop_min_scale = 0.35  # Random resized crop: smallest area fraction kept.
  c.data.flip = True  # Random horizontal flips.
  c.data.color_jitter = 0.2  # Brightness/contrast/saturation factor range 1 +- value; 0 = off.
  # Probability that a training picture's RGB channels are shuffled (and half of those times inverted):
  # from scratch on few pictures, it stops the network memorising colours instead of learning shapes.
  c.data.recolor = 0.0

  c.train = common.train_config(
    batch_size=128,
    epochs=10,
    learning_rate=1e-3,
    warmup_epochs=0.5,
    beta2=0.999,
    weight_decay=0.05,
    log_every=20,
    eval_every=0,
    patience=3,
  )
  # Fine-tuning only (model.pretrained set; from scratch the whole network learns at the full rate):
  c.train.backbone_lr_scale = 0.1  # Backbone learning rate = this x the head's; 1 = the same.
  c.train.freeze_epochs = 0.0  # Train only the head for this many epochs first (BatchNorm statistics still move).
  c.train.label_smoothing = 0.0  # Of the cross-entropy's one-hot targets; 0 = off.

  c.modal = common.modal_config()  # configs/common.py: GPU, nodes, timeout, retries, volumes.

  if arg in ('scratch', 'smoke'):  # From random weights: every layer learns at the full rate, for longer.
    c.model.pretrained = ''
    c.train.learning_rate = 2e-3
    c.train.epochs = 60
    c.train.warmup_epochs = 2
    c.train.patience = 0  # A from-scratch run keeps improving late; keep its whole schedule.
    c.data.recolor = 0.2  # Some scrambled colours: shape and texture, not the colour of the few training pets.
  if arg == 'smoke':
    # A quarter-width ResNet18 at 96 px: many times the full width's speed on a CPU (BENCHMARKS.md, 'Quality');
    # 96 px, not 64, because XLA's CPU convolutions are slow on 2x2 maps.
    c.model.width = 16
    c.data.max_examples = 0
    c.data.image_size = 96
    c.data.cache_size = 128  # A 4:3 image's shorter side (96) still covers the input.
    c.data.crop_min_scale = 0.7  # Small objects: a smaller crop often cuts the very shape that is the label.
    c.data.recolor = 0.5  # Few pictures, few steps: without it the network learns their colours first.
    c.train.batch_size = 32
    c.train.eval_batch_size = 128
    c.train.steps = 1000  # A fixed budget: 250 pictures or 3,000 get the same compute.
    c.train.warmup_epochs = 0.5
    c.train.eval_every = 100
    c.train.log_every = 50
  elif arg not in (None, '', 'scratch'):
    raise ValueError(f"configs/cats.py: unknown config argument {arg!r}; use 'smoke', 'scratch' or nothing.")
  return c
