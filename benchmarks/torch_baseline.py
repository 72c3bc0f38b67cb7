"""The PyTorch side of `tinycats bench --baseline torch`: the same train step in plain PyTorch.

Written here (not imported from the original project, and without torchvision, which does not
install beside the CPU torch wheel): torchvision's ResNet18/34 layout, and a DiT of the same sizes
as `configs/dit.py` (adaLN-Zero blocks, fixed sin-cos positions, null label row; its overlapping output
tiles, but DiT's own block: the recipe's RMSNorm, QK-norm, SwiGLU and RoPE are not mirrored). The step is
forward, loss, backward, global-norm clipping and AdamW, in eager mode, with the library's dtype
policy: float32 parameters, bfloat16 compute under autocast for `bf16`. Inputs are float tensors at
the training size. Work the JAX step does and this one does not: the on-device crop, flip and colour
jitter, the ResNet's dropout, the DiT's EMA update; and AdamW here decays every parameter, where the
library's optimizer leaves biases and normalisation scales out.
"""

from __future__ import annotations

import math
import statistics
import time

from benchmarks.speed import kernel_flops, kernel_shapes
from benchmarks.timing import cpu_model, queued_timings, timings


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def available(backend: str, devices: int) -> tuple[bool, str]:
  """Whether a side-by-side run is meaningful here: torch present, on the kind of device JAX uses, one device."""
  torch = _torch()
  if torch is None:
    return False, 'torch is not installed (pip install torch==2.13.0 for the CPU wheel)'
  if backend not in ('cpu', 'gpu'):
    return False, f'no PyTorch baseline for the {backend} backend'
  if backend == 'gpu' and not torch.cuda.is_available():
    return False, 'this torch has no CUDA: it would put a CPU against the GPU (install a CUDA build of torch)'
  if devices != 1:
    return False, f'the baseline runs on one device and JAX used {devices}: pass --devices 1'
  return True, ''


def resnet(depth: int, num_classes: int, width: int = 64):
  """torchvision's ResNet18/34 in plain torch, with its module names: `state_dict()` has torchvision's keys."""
  torch = _torch()
  nn = torch.nn
  stages = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]

  class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
      self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
      self.downsample = (
        nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        if stride != 1 or cin != cout
        else None
      )

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class ResNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      cin = width
      for i, blocks in enumerate(stages):
        cout = width * 2**i
        setattr(
          self,
          f'layer{i + 1}',
          nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, 2 if i and not b else 1) for b in range(blocks)]),
        )
        cin = cout
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
      x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      return self.fc(torch.flatten(self.avgpool(x), 1))

  return ResNet()


def dit(
  image_size: int, patch: int, width: int, depth: int, heads: int, mlp_ratio: float, num_classes: int, overlap: int = 0
):
  """DiT's adaLN-Zero blocks in plain torch, at the library DiT's sizes (parameter counts agree within 1%).

  Attention is torch's fused `scaled_dot_product_attention`, the kernel a PyTorch user would reach for. With
  `overlap`, the output tiles are (patch + 2 overlap) wide and cross-faded as the library's `patches.overlap_add`
  does, by `F.fold` (col2im: the overlap-add torch has).
  """
  torch = _torch()
  nn, F = torch.nn, torch.nn.functional
  tokens = (image_size // patch) ** 2
  tile = patch + 2 * overlap

  def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
      self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
      self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
      hidden = int(width * mlp_ratio)
      self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
      self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x, c):
      s1, c1, g1, s2, c2, g2 = self.ada(c).chunk(6, dim=1)
      b, n, _ = x.shape
      q, k, v = self.qkv(modulate(self.norm1(x), s1, c1)).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
      attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width)
      x = x + g1[:, None] * self.proj(attn)
      return x + g2[:, None] * self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), s2, c2)), approximate='tanh'))

  class DiT(nn.Module):
    def __init__(self):
      super().__init__()
      self.x_embedder = nn.Conv2d(3, width, patch, patch)
      grid = int(math.sqrt(tokens))
      self.register_buffer('pos_embed', torch.randn(1, tokens, width) * 0.02)  # Fixed, like the sin-cos table.
      self.t_embedder = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
      self.y_embedder = nn.Embedding(num_classes + 1, width)
      self.blocks = nn.ModuleList([Block() for _ in range(depth)])
      self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
      self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
      self.linear = nn.Linear(width, tile * tile * 3)
      self.grid = grid
      ramp = (torch.arange(2 * overlap) + 0.5) / max(2 * overlap, 1)
      window = torch.cat([ramp, torch.ones(patch - 2 * overlap), ramp.flip(0)])
      self.register_buffer('window', (window[:, None] * window[None]).repeat(3, 1, 1).reshape(1, -1, 1))
      self.register_buffer('weight', self._fold(self.window.expand(1, -1, tokens)))

    def forward(self, x, t, y):
      half = 128
      freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
      args = (1000 * t)[:, None].float() * freqs[None]
      c = self.t_embedder(torch.cat([torch.cos(args), torch.sin(args)], -1)) + self.y_embedder(y)
      h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
      for block in self.blocks:
        h = block(h, c)
      shift, scale = self.final_ada(c).chunk(2, dim=1)
      h = self.linear(modulate(self.norm_final(h), shift, scale))
      b = h.shape[0]
      if overlap:  # (B, L, ky, kx, C) -> (B, C * ky * kx, L), windowed, summed where tiles overlap.
        h = h.reshape(b, tokens, tile, tile, 3).permute(0, 4, 2, 3, 1).reshape(b, -1, tokens)
        return self._fold(h * self.window) / self.weight
      h = h.reshape(b, self.grid, self.grid, patch, patch, 3).permute(0, 5, 1, 3, 2, 4)
      return h.reshape(b, 3, image_size, image_size)

    def _fold(self, columns):
      return F.fold(columns, (image_size, image_size), tile, padding=overlap, stride=patch)

  return DiT()


def train_step(model: str, batch: int, image_size: int, dtype: str, steps: int, config, backend: str = 'cpu') -> dict:
  """Times the plain-PyTorch step at the JAX one's batch, size and dtype policy, on the same kind of device."""
  torch = _torch()
  torch.manual_seed(0)
  device = torch.device('cuda' if backend == 'gpu' else 'cpu')
  classes = len(config.data.classes)
  if model == 'dit':
    m = config.model
    net = dit(image_size, m.patch_size, m.width, m.depth, m.heads, m.mlp_ratio, classes, m.get('overlap', 0))
  else:
    net = resnet(int(model.removeprefix('resnet')), classes, config.model.width)
  net.to(device).train()
  t = config.train
  optimizer = torch.optim.AdamW(net.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
  images = torch.randn(batch, 3, image_size, image_size, device=device)
  labels = torch.randint(0, classes, (batch,), device=device)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == 'bf16')

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      if model == 'dit':
        noise, u = torch.randn_like(images), torch.rand(batch, device=device)
        y = torch.where(torch.rand(batch, device=device) < config.flow.label_dropout, classes, labels)
        x_t = u[:, None, None, None] * images + (1 - u[:, None, None, None]) * noise
        loss = torch.mean((net(x_t, u, y).float() - (images - noise)) ** 2)
      else:
        loss = torch.nn.functional.cross_entropy(net(images).float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
    optimizer.step()
    return float(loss.detach())  # Waits for the device.

  step()  # Allocations and first-call overheads are not timed (torch has no compilation here).
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    seconds.append(time.perf_counter() - start)
  return dict(
    kind='train_step',
    framework='torch',
    torch=torch.__version__,
    threads=torch.get_num_threads(),
    backend=device.type,
    device=torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu',
    cpu_model=cpu_model(),
    model=model,
    batch=batch,
    image_size=image_size,
    dtype=dtype,
    steps=steps,
    devices=1,
    parameters=sum(p.numel() for p in net.parameters()),
    **timings(seconds),
    images_per_sec=batch / statistics.median(seconds),
    last_loss=loss,
  )


def kernels(batch: int, dtype: str, steps: int, backend: str = 'cpu') -> list[dict]:
  """`speed.kernels` in PyTorch: the same matmul and 3x3 convolution (channels-last), in `dtype`."""
  torch = _torch()
  device = torch.device('cuda' if backend == 'gpu' else 'cpu')
  element = torch.bfloat16 if dtype == 'bf16' else torch.float32
  wait = (lambda _: torch.cuda.synchronize()) if device.type == 'cuda' else (lambda _: None)  # CPU ops are eager.
  rows = []
  for name, (op, shape) in kernel_shapes(batch).items():
    if op == 'matmul':
      m, k, n = shape
      a, b = torch.ones(m, k, dtype=element, device=device), torch.ones(k, n, dtype=element, device=device)
      launch = lambda a=a, b=b: a @ b
    else:
      n, side, cin, cout = shape
      x = torch.ones(n, cin, side, side, dtype=element, device=device).to(memory_format=torch.channels_last)
      w = torch.ones(cout, cin, 3, 3, dtype=element, device=device).to(memory_format=torch.channels_last)
      launch = lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1)
    with torch.no_grad():
      timing = queued_timings(launch, wait, steps)
    rows.append(
      dict(
        kind='kernel',
        framework='torch',
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        backend=device.type,
        cpu_model=cpu_model(),
        name=name,
        op=op,
        shape=list(shape),
        dtype=dtype,
        steps=steps,
        **timing,
        gflops_per_sec=kernel_flops(op, shape) / timing['step_ms_median'] / 1e6,
      )
    )
  return rows
