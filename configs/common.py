"""Config parts both recipes share. A config file imports this module as `common`.

Each builder sets every field with a comment saying what it means; a recipe passes the values that are its own
(keyword arguments, required where the recipes differ) and adds the fields only its task has.
"""

import ml_collections


def run_config(task: str, name: str) -> ml_collections.ConfigDict:
  """The top of a recipe: its task, seed and run name, and an empty `model` group for the recipe to fill."""
  c = ml_collections.ConfigDict()
  c.task = task  # classifier | generator
  c.seed = 0  # Weights, batch order and augmentation: the same seed, the same run.
  c.name = name  # A Modal run's default name is <name>-<date>-<time> (launch/modal_train.py --name).
  c.model = ml_collections.ConfigDict()
  return c


def data_config(
  *, labels, val_fraction, val_min_per_class, image_size, cache_size, eval_crop, normalization
) -> ml_collections.ConfigDict:
  """Where the pictures come from, how they are split and cached, what the network sees."""
  d = ml_collections.ConfigDict()
  d.source = 'tfds'  # tfds | folder
  d.data_dir = ''  # TFDS data dir ('' = TFDS default, ~/tensorflow_datasets).
  d.folder = ''  # Root of an image-folder tree (one sub-folder per class) for source=folder.
  d.labels = labels  # species (cat vs other) | breed (37 classes) | cat_breeds (12 cat breeds + other); tfds only.
  d.classes = ()  # Filled from the data when training starts and recorded in WORKDIR/config.json.
  d.val_fraction = val_fraction  # Of each class, held out of the TFDS train split (seeded) for validation.
  # Validation gets at least this many images of each class, taken from training (at most half of a class's
  # non-test images).
  d.val_min_per_class = val_min_per_class
  d.test_fraction = 0.1  # folder only: the TFDS source has its own test split.
  d.split_seed = 0  # Seeds the train/val(/test) split, independent of the training seed.
  d.max_examples = 0  # Cap per split, classes in proportion (0 = all); val keeps its floor above it.
  d.image_size = image_size  # What the network sees (a generator: the size it generates).
  d.cache_size = cache_size  # Each image is cached whole: longer side resized to this, on a square uint8 canvas.
  # The central square of this fraction of the shorter side, resized to image_size: what evaluation, prediction
  # and export see (and a generator's training images, before their flip). In (0, 1].
  d.eval_crop = eval_crop
  d.cache_dir = ''  # '' = $TINYCATS_CACHE, else beside the data: DATA_DIR/tinycats-cache, FOLDER/.tinycats-cache.
  d.device_cache_gb = 4.0  # A training split up to this size is kept on each device (no per-step copy); 0 = never.
  d.normalization = normalization  # imagenet | none | symmetric ([-1, 1]); recorded in the workdir for eval/export.
  return d


def train_config(
  *, batch_size, epochs, learning_rate, warmup_epochs, beta2, weight_decay, log_every, eval_every, patience
) -> ml_collections.ConfigDict:
  """The optimizer, the schedule, and when the loop logs, evaluates, checkpoints and stops."""
  t = ml_collections.ConfigDict()
  t.batch_size = batch_size  # Global batch, split over all devices.
  t.eval_batch_size = 256
  # Run each batch as this many sequential micro-batches, for memory: the gradient is the batch's mean, but
  # random draws (and a classifier's BatchNorm statistics) are per micro-batch.
  t.grad_accum = 1
  t.epochs = epochs
  t.steps = 0  # > 0: train exactly this many steps whatever the data's size (epochs is then unused).
  t.optimizer = 'adamw'
  t.learning_rate = learning_rate  # Peak, reached after warmup, then cosine decay to 0.
  t.warmup_epochs = warmup_epochs
  t.beta2 = beta2  # AdamW's second-moment decay (optax's default is 0.999).
  t.weight_decay = weight_decay
  t.grad_clip = 1.0  # Global-norm clipping; 0 = off.
  t.log_every = log_every  # Steps between logged metrics (one host sync each).
  # Steps between evaluations (validation, a generator's sample grid) and checkpoints; 0 = once per epoch.
  t.eval_every = eval_every
  # Evaluations without a better validation score (a classifier's balanced accuracy, a generator's loss) before
  # stopping; 0 = never.
  t.patience = patience
  t.keep_checkpoints = 2  # The last N are kept, plus the best by the validation score that `patience` watches.
  # JAX's persistent compilation cache: 'auto' ($TINYCATS_CACHE/xla or ~/.cache/tinycats/xla; on Modal the outputs
  # volume's .xla-cache), a folder, or '' for none. A rerun or resume loads its compiled steps instead of compiling.
  t.compilation_cache = 'auto'
  return t


def modal_config() -> ml_collections.ConfigDict:
  """Training on Modal: `python -m launch.modal_train` without --local."""
  m = ml_collections.ConfigDict()
  m.app = 'tinycats'  # The Modal app's name.
  m.gpu = 'H100'  # TYPE or TYPE:COUNT (e.g. H100:8): every GPU joins the one data-parallel mesh.
  m.nodes = 1  # > 1: a Modal multi-node cluster, one JAX process per node (jax.distributed).
  m.timeout = 4 * 3600  # Seconds per call, at most 24 h; a retried or re-run call resumes.
  m.retries = 3  # After a preemption or crash, with back-off; each retry resumes from the last checkpoint.
  m.memory_gb = 64  # Container RAM; 0 = Modal's default.
  m.data_volume = 'tinycats-data'  # Holds the prepared TFDS data dir (prepared once).
  m.outputs_volume = 'tinycats-outputs'  # Holds one workdir per run: /outputs/<run name>.
  return m
