"""The classifier recipe: ImageNet-style ResNet18 fine-tuned on Oxford-IIIT Pet, cat vs other.

Three variants, one file:
- `configs/cats.py`: the real run, fine-tuning torchvision's ImageNet weights (224 px, the whole TFDS
  train split, a GPU).
- `configs/cats.py:scratch`: the same network and data from random weights, with a from-scratch
  schedule and augmentation (a GPU). `model.pretrained=''` alone keeps the fine-tuning schedule, which
  a random network learns poorly from: use this variant instead.
- `configs/cats.py:smoke`: from scratch at CPU size: ResNet18 at a quarter width (16), 96 px, a fixed
  1,000 steps of 32 whatever the data's size (about 2.5 minutes on 2 cores). It needs no network and no
  pretrained weights, and learns shapes, not colours (BENCHMARKS.md, 'Quality').
Override any field on the command line: `--config.train.batch_size=64`.
"""

import ml_collections

import common  # configs/common.py (the loader puts configs/ on the path).


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = 'classifier'
  c.seed = 0
  c.name = 'cats'  # Run name prefix; also the Modal app name.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet18'  # resnet18 | resnet34
  c.model.width = 64  # Stem width; torchvision's ResNets use 64.
  c.model.dropout = 0.2  # Before the linear head.
  # Compute dtype: auto | bfloat16 | float32; 'auto' is bfloat16 on a GPU or TPU and float32 on a CPU (XLA's
  # bfloat16 CPU kernels are slower, BENCHMARKS.md). Parameters and BatchNorm statistics stay float32.
  c.model.dtype = 'auto'
  # Starting weights: 'torchvision' = torchvision's ImageNet weights for model.name (from the Hub,
  # timm/<name>.tv_in1k, cached), a .safetensors/.pth path or another hub id; '' = from scratch.
  c.model.pretrained = 'torchvision'

  c.data = ml_collections.ConfigDict()
  c.data.source = 'tfds'  # tfds | folder
  c.data.data_dir = ''  # TFDS data dir ('' = TFDS default, ~/tensorflow_datasets).
  c.data.folder = ''  # Root of an image-folder tree (one sub-folder per class) for source=folder.
  c.data.labels = 'species'  # species (cat vs other) | breed (37 classes); tfds only.
  c.data.classes = ()  # Filled from the data when training starts and recorded in WORKDIR/config.json.
  c.data.val_fraction = 0.1  # Of each class, held out of the TFDS train split (seeded) for validation.
  # Validation gets at least this many images of each class, taken from training (at most half of a class's
  # non-test images): it chooses the best checkpoint by balanced accuracy, which needs every class in it.
  c.data.val_min_per_class = 10
  c.data.test_fraction = 0.1  # folder only: the TFDS source has its own test split.
  c.data.split_seed = 0  # Seeds the train/val(/test) split, independent of the training seed.
  c.data.max_examples = 0  # Cap per split, classes in proportion (0 = all); val keeps its floor above it.
  c.data.image_size = 224  # What the network sees.
  # Each image is cached whole: longer side resized to this, on a square uint8 canvas. A 500x375 photo
  # keeps 320x240, so the evaluation crop (0.875 x 240 = 210 px) is resized up a little to 224.
  c.data.cache_size = 320
  # Evaluation, prediction and export see the central square of this fraction of the shorter side, resized
  # to image_size: 0.875 is torchvision's Resize(256) + CenterCrop(224). In (0, 1].
  c.data.eval_crop = 0.875
  c.data.cache_dir = ''  # '' = $TINYCATS_CACHE, else beside the data: DATA_DIR/tinycats-cache, FOLDER/.tinycats-cache.
  c.data.device_cache_gb = 4.0  # A training split up to this size is kept on each device (no per-step copy); 0 = never.
  c.data.normalization = 'imagenet'  # imagenet | none; recorded in the workdir for eval/export.
  c.data.crop_min_scale = 0.35  # Random resized crop: smallest area fraction kept.
  c.data.flip = True
  c.data.color_jitter = 0.2  # Brightness/contrast/saturation factor range 1 +- value; 0 = off.
  # Probability that a training picture's RGB channels are shuffled (and half of those times inverted):
  # from scratch on few pictures, it stops the network memorising colours instead of learning shapes.
  c.data.recolor = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # Global batch, split over all devices.
  c.train.eval_batch_size = 256
  c.train.epochs = 10
  c.train.steps = 0  # > 0: train exactly this many steps whatever the data's size (epochs is then unused).
  c.train.optimizer = 'adamw'
  # Run each batch as this many sequential micro-batches, for memory: the gradient is the batch's
  # mean, but BatchNorm statistics and random draws are per micro-batch.
  c.train.grad_accum = 1
  c.train.learning_rate = 1e-3  # Peak, reached after warmup, then cosine decay to 0.
  c.train.warmup_epochs = 0.5
  c.train.beta2 = 0.999  # AdamW's second-moment decay.
  c.train.weight_decay = 0.05
  # Fine-tuning only (model.pretrained set; from scratch the whole network learns at the full rate):
  c.train.backbone_lr_scale = 0.1  # Backbone learning rate = this x the head's; 1 = the same.
  c.train.freeze_epochs = 0.0  # Train only the head for this many epochs first (BatchNorm statistics still move).
  c.train.grad_clip = 1.0  # Global-norm clipping; 0 = off.
  c.train.label_smoothing = 0.0
  c.train.log_every = 20  # Steps between logged metrics (one host sync each).
  c.train.eval_every = 0  # Steps between validation + checkpoint; 0 = once per epoch.
  c.train.patience = 3  # Evaluations without a better validation balanced accuracy before stopping; 0 = never.
  # The last N are kept, plus the best by validation balanced accuracy (mean per-class recall; of equal
  # scores the later step): a model that answers one class for everything scores 1/K, not the majority's share.
  c.train.keep_checkpoints = 2
  # JAX's persistent compilation cache: 'auto' ($TINYCATS_CACHE/xla or ~/.cache/tinycats/xla; on Modal the outputs
  # volume's .xla-cache), a folder, or '' for none. A rerun or resume loads its compiled steps instead of compiling.
  c.train.compilation_cache = 'auto'

  c.modal = common.modal_config()  # configs/common.py: GPU, nodes, timeout, retries, volumes.

  if arg in ('scratch', 'smoke'):  # From random weights: every layer learns at the full rate, for longer.
    c.model.pretrained = ''
    c.train.learning_rate = 2e-3
    c.train.epochs = 60
    c.train.warmup_epochs = 2
    c.train.patience = 0  # A from-scratch run keeps improving late; keep its whole schedule.
    c.data.recolor = 0.2  # Some scrambled colours: shape and texture, not the colour of the few training pets.
  if arg == 'smoke':
    # Measured on 2 cores (BENCHMARKS.md, 'Quality'): a quarter-width ResNet18 at 96 px takes ~300 images/s,
    # where the full width takes ~30; 96 px, not 64, because XLA's CPU convolutions are slow on 2x2 maps.
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
