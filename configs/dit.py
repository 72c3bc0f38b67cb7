"""The generator recipe: a class-conditional DiT trained by rectified flow on Oxford-IIIT Pet.

13 labels: the 12 cat breeds (0-11) and every dog as 'other' (12); label 13 is the null label
for classifier-free guidance. `configs/dit.py` is the real run (128 px, patch 16, width 384,
depth 12, 6 heads: about 33M parameters, a GPU); `:patch8` is the same at patch 8 (4x the
tokens); `:smoke` is a small DiT at 32 px (patch 4): 2,700 steps of 32 images, about 4 minutes on 2 CPU cores;
`:smoke128` the same small DiT at this recipe's 128 px, patch 16 and sampling (`bench --quality generator128`).
Override any field on the command line: `--config.train.batch_size=64`.
"""

import ml_collections

import common  # configs/common.py (the loader puts configs/ on the path).


def get_config(arg=None):
  c = common.run_config('generator', 'dit')
  c.model.name = 'dit'
  c.model.patch_size = 16
  c.model.width = 384
  c.model.depth = 12
  c.model.heads = 6
  c.model.mlp_ratio = 4.0
  # LightningDiT's and JiT's block: RMSNorm, QK-norm, SwiGLU, RoPE. They drew better samples on the 128 px case; at
  # 32 px they cost time and accuracy, so :smoke has DiT's (BENCHMARKS.md).
  c.model.norm = 'rmsnorm'  # rmsnorm (LightningDiT, JiT) | layernorm (DiT)
  c.model.qk_norm = True  # RMS-normalise queries and keys per head.
  c.model.mlp = 'swiglu'  # swiglu (2/3 of the hidden width, the same cost) | gelu (DiT)
  c.model.rope = True  # 2-D rotary position embedding in attention, beside the fixed sin-cos one.
  c.model.bottleneck = 0  # > 0: patch values -> this many -> width (JiT's bottleneck patch embedding); 0 = one Linear.
  # In-context tokens carrying the label, in front of the patch tokens (JiT: 32). 4 from block 1 lost accuracy on
  # the 32 px case (BENCHMARKS.md), so none.
  c.model.class_tokens = 0
  c.model.class_token_block = 0  # The block from which they are there (JiT: 4 of 12).
  # Pixels each token's output tile reaches past its patch on every side, cross-faded with its neighbours'
  # (tinycats/models/patches.py): tiles that disagree meet in a ramp, not a step. 0 = DiT's tiles, which left the
  # 16 px patch grid on every 128 px sample (blockiness 6.1-6.4 against the real pictures' 1.0; 4: 1.0, the same
  # accuracy; BENCHMARKS.md, 'Patch blocks').
  c.model.overlap = 4
  # Compute dtype: auto | bfloat16 | float32; 'auto' is bfloat16 on a GPU or TPU and float32 on a CPU (XLA's
  # bfloat16 CPU kernels are slower, BENCHMARKS.md). Parameters, norms, softmax and the loss stay float32.
  c.model.dtype = 'auto'

  c.data = common.data_config(
    labels='cat_breeds',
    val_fraction=0.05,
    val_min_per_class=4,  # So the validation loss covers every label.
    image_size=128,
    cache_size=176,  # Leaves a 4:3 image's shorter side (132) above image_size.
    eval_crop=1.0,  # The whole shorter side.
    normalization='symmetric',  # Pixels in [-1, 1], the scale of the noise.
  )
  c.data.flip = True  # Random horizontal flips: the only augmentation.

  c.flow = ml_collections.ConfigDict()
  # What the network outputs: 'v' the velocity, or 'x' the clean image, turned into the velocity
  # (x̂ - x_t) / max(1 - t, t_eps) inside the model (JiT), so the loss, the samplers and the ONNX see a velocity.
  c.flow.prediction = 'x'
  c.flow.t_eps = 0.05  # x-prediction only: bounds 1 / (1 - t) near the data end.
  # uniform | logit_normal: sigmoid of N(mean, std). JiT's (-0.8, 0.8) at 32 px; at 128 px the same picture is 16
  # times the pixels, noise hides less of it at each t, and the mean moves by -log(128 / 32) to -2.2: on the 128 px
  # case -0.8 drew no class and -2.2 did (BENCHMARKS.md, 'The generator, change by change').
  c.flow.timesteps = 'logit_normal'
  c.flow.logit_mean = -2.2
  c.flow.logit_std = 0.8
  c.flow.label_dropout = 0.1  # Fraction of labels replaced by the null label, for guidance.

  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.9999  # Ramps up as min(decay, (1 + step) / (10 + step)).

  c.sample = ml_collections.ConfigDict()  # Grids written at every evaluation to WORKDIR/samples/.
  c.sample.sampler = 'euler'  # euler | heun
  # Integration steps from noise to data: 20 Euler steps were as good as more steps or Heun on the 128 px case
  # (BENCHMARKS.md).
  c.sample.steps = 20
  c.sample.guidance = 4.0  # Classifier-free guidance scale; 1 = none.
  # Guide only the steps with lo <= t <= hi (t = 0 noise, 1 data): mid-flow, where guidance sets the class without
  # collapsing variety (Kynkäänniemi et al. 2024; (0, 1) guides every step). (0.25, 0.8) was the best on the 32 px
  # case; (0.05, 0.5) is the same noise levels at 128 px (the shift above). BENCHMARKS.md.
  c.sample.guidance_interval = (0.05, 0.5)
  c.sample.seed = 0  # Fixed noise: grids of successive evaluations are comparable.
  c.sample.per_class = 8  # Grid columns.

  c.train = common.train_config(
    batch_size=256,
    epochs=800,
    learning_rate=3e-4,
    warmup_epochs=10,
    beta2=0.95,  # JiT's.
    weight_decay=0.0,
    log_every=50,
    eval_every=1000,
    patience=0,
  )

  c.modal = common.modal_config()  # configs/common.py: GPU, nodes, timeout, retries, volumes.

  if arg == 'patch8':
    c.model.patch_size = 8
    c.model.overlap = 2
  elif arg in ('smoke', 'smoke128'):
    _smoke(c, arg)
  elif arg not in (None, ''):
    raise ValueError(f"configs/dit.py: unknown config argument {arg!r}; use 'smoke', 'smoke128', 'patch8' or nothing.")
  return c


def _smoke(c, arg: str) -> None:
  """A small DiT for 2 CPU cores: `smoke` at 32 px with patch 4, `smoke128` at the real recipe's 128 px with
  patch 16 (the same 64 tokens): 2,700 and 4,800 steps of 32 images, about 4 and 14-21 minutes on 2 CPU cores."""
  c.model.width = 96
  c.model.depth = 3
  c.model.heads = 4
  c.ema.decay = 0.995
  c.sample.per_class = 6
  c.data.flip = False  # A short run learns the pictures as they are; mirrored copies are more to learn.
  # More, smaller steps: 2,400 of 32 images learned shapes better than 1,200 of 64 (BENCHMARKS.md, 'Quality').
  c.train.batch_size = 32
  c.train.eval_batch_size = 128
  # A fixed budget whatever the data's size: 2,700 steps drew stars at 32 px that 2,400 did not (BENCHMARKS.md).
  c.train.steps = 2700
  c.train.learning_rate = 4e-3
  c.train.warmup_epochs = 1
  c.train.log_every = 50
  c.train.eval_every = 900
  if arg == 'smoke128':
    # The default recipe's geometry, time shift, block, guidance interval and 20 Euler steps, at smoke size.
    c.data.cache_size = 144  # To 128 px what 44 is to 32: room for the crop's resize.
    # Twice the 32 px steps, each 2-2.5 times the cost (14-21 minutes on 2 cores): at 2,400 steps the case drew 0.74
    # and 0.88, at 4,800 0.93 (BENCHMARKS.md, 'what longer training gives').
    c.train.steps = 4800
    c.train.eval_every = 1200
    return
  c.model.patch_size = 4
  c.model.overlap = 1  # A quarter of the patch, as 4 of 16 above.
  c.data.image_size = 32
  c.data.cache_size = 44
  c.flow.logit_mean = -0.8  # JiT's, at the 32 px the smoke draws (see flow.logit_mean above).
  # DiT's block: at 32 px the one above cost time and accuracy (BENCHMARKS.md).
  c.model.norm, c.model.qk_norm, c.model.mlp, c.model.rope = 'layernorm', False, 'gelu', False
  c.sample.guidance_interval = (0.25, 0.8)
  # 10 Euler steps: as accurate as more steps or Heun at 32 px (BENCHMARKS.md).
  c.sample.steps = 10
