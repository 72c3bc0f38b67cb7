"""The classifier recipe: ImageNet-style ResNet18 fine-tuned on Oxford-IIIT Pet, cat vs other.

`configs/cats.py` is the real run (224 px, the whole TFDS train split, a GPU);
`configs/cats.py:smoke` is the same recipe cut to CPU size (96 px, at most 512 images
per split, 3 epochs: about a minute and a half on 2 cores). Override any field on the command line: `--config.train.batch_size=64`.
"""
import ml_collections

import common  # configs/common.py (the loader puts configs/ on the path).


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = 'classify'
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

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # Global batch, split over all devices.
  c.train.eval_batch_size = 256
  c.train.epochs = 10
  c.train.optimizer = 'adamw'
  # Run each batch as this many sequential micro-batches, for memory: the gradient is the batch's
  # mean, but BatchNorm statistics and random draws are per micro-batch.
  c.train.grad_accum = 1
  c.train.learning_rate = 1e-3  # Peak, reached after warmup, then cosine decay to 0.
  c.train.warmup_epochs = 0.5
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

  c.modal = common.modal_config()  # configs/common.py: GPU, nodes, timeout, retries, volumes.

  if arg == 'smoke':
    # 96 px, not 64: XLA's CPU convolutions are pathologically slow on 2x2 maps (ResNet18's last
    # stage at 64 px), so 64 px trains slower than 96 px here.
    c.data.max_examples = 512
    c.data.image_size = 96
    c.data.cache_size = 128  # A 4:3 image's shorter side (96) still covers the input.
    c.train.batch_size = 32
    c.train.eval_batch_size = 64
    c.train.epochs = 3
    c.train.log_every = 5
  elif arg not in (None, ''):
    raise ValueError(f"configs/cats.py: unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
