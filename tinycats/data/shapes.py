"""Images whose labels only shape carries: test, benchmark and notebook data that cannot be solved by colour.

Each image holds one object whose outline is the class (a circle, a star, a cat's head ...), while
everything else is drawn at random per image, independently of the class: the object's colour and
texture, the background (flat, gradient, stripes or noise, with clutter), the object's position,
size, rotation and stretch, and the picture's own size and aspect ratio (most are not square). The
object's area is drawn from one distribution for every class, so even the share of the picture it
covers says nothing of the class. `colour_statistics` and `colour_probe_accuracy` check that: a
classifier on per-image colour statistics stays at chance (tests/test_shapes.py).

    make_folder('data/shapes', per_class=100)          # data/shapes/<class>/<i>.png: data.source=folder
    image = render(np.random.default_rng(0), 'star')   # one uint8 (H, W, 3) picture
    image, mask = render(rng, 'star', with_mask=True)  # and the object's (H, W) coverage in [0, 1]

`Style` sets how hard the pictures are: `HARD` (textures, clutter, small objects), `EASY` (large
objects, plain or noisy grounds, little clutter) and `FLAT` (one colour on another: the generator's).
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import functools
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ('circle', 'ring', 'triangle', 'square', 'star', 'cross', 'crescent', 'heart', 'arrow', 'hourglass')
PETS = ('cat', 'dog')  # Heads that differ in their ears: pointed and upright, or long and hanging.


@dataclasses.dataclass(frozen=True)
class Style:
  """How a picture is drawn: ranges that every class shares."""

  size: int = 64  # Mean side of the picture, in pixels.
  aspect: tuple[float, float] = (0.6, 1.67)  # Width / height, log-uniform: most pictures are not square.
  area: tuple[float, float] = (0.06, 0.22)  # Fraction of the picture the object covers (the same for every class).
  stretch: tuple[float, float] = (0.75, 1.33)  # The object's own width / height.
  rotation: float = 30.0  # Degrees, uniform in +- this.
  clutter: tuple[int, int] = (2, 8)  # Distractors (lines and small dots) drawn behind the object.
  textured: float = 0.5  # Probability that the object is filled with a gradient or stripes, not one colour.
  grounds: tuple[str, ...] = ('flat', 'gradient', 'stripes', 'noise')  # Backgrounds, drawn with equal odds.
  spread: float = 1.0  # How far from the centre the object may sit: 1 = anywhere it fits, 0 = centred.


# Each style names every field it changes, so two styles read side by side (their lines repeat by design).
HARD = Style()
EASY = Style(
  size=48,
  aspect=(0.75, 1.33),
  area=(0.14, 0.3),
  stretch=(0.85, 1.18),
  rotation=15.0,
  clutter=(0, 1),
  textured=0.0,
  grounds=('flat', 'gradient', 'noise'),
)
# One colour on one colour: the least a generator has to model besides the shape (colours still random).
FLAT = Style(
  size=48,
  aspect=(0.75, 1.33),
  area=(0.18, 0.35),
  stretch=(0.85, 1.18),
  rotation=15.0,
  clutter=(0, 0),
  textured=0.0,
  grounds=('flat',),
)
# One large object near the middle, as a pet photo is framed: the generator's benchmark pictures.
# Colour and ground (flat or gradient) are random per picture, so the outline still carries the class.
CENTRED = Style(
  size=48,
  aspect=(0.75, 1.33),
  area=(0.2, 0.4),
  stretch=(0.85, 1.18),
  rotation=15.0,
  clutter=(0, 0),
  textured=0.0,
  grounds=('flat', 'gradient'),
  spread=0.5,
)
_SUPERSAMPLE = 3  # Outlines are drawn this much larger and reduced: smooth, antialiased edges.


def _unit_outline(shape: str) -> list[list[tuple[float, float]]]:
  """Polygons in [-1, 1]^2 (y down), as (outer, hole, ...) pairs to draw filled then cut out."""
  t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
  circle = lambda r, cx=0.0, cy=0.0: [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in t]
  if shape == 'circle':
    return [circle(1.0)]
  if shape == 'ring':
    return [circle(1.0), circle(0.55)]
  if shape == 'triangle':
    return [[(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)]]
  if shape == 'square':
    return [[(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]]
  if shape == 'star':
    return [
      [
        (r * math.sin(a), -r * math.cos(a))
        for k in range(10)
        for a, r in [(k * math.pi / 5, 1.0 if k % 2 == 0 else 0.42)]
      ]
    ]
  if shape == 'cross':
    w = 0.32
    return [
      [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    ]
  if shape == 'crescent':
    return [circle(1.0), circle(0.85, 0.45, -0.2)]
  if shape == 'heart':
    s = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    x, y = 16 * np.sin(s) ** 3, -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s))
    return [list(zip(x / 16.5, (y + 2.5) / 15.0))]
  if shape == 'arrow':
    return [[(-1, -0.25), (0.15, -0.25), (0.15, -0.7), (1, 0), (0.15, 0.7), (0.15, 0.25), (-1, 0.25)]]
  if shape == 'hourglass':
    return [[(-0.8, -1), (0.8, -1), (0.12, 0), (0.8, 1), (-0.8, 1), (-0.12, 0)]]
  if shape in PETS:
    head = circle(0.62, 0.0, 0.25)
    if shape == 'cat':  # Pointed ears standing above the head.
      ears = [[(-0.62, 0.0), (-0.5, -0.95), (-0.12, -0.3)], [(0.62, 0.0), (0.5, -0.95), (0.12, -0.3)]]
    else:  # Long rounded ears hanging beside the head.
      ears = [[(cx + 0.2 * math.cos(a), 0.35 + 0.6 * math.sin(a)) for a in t] for cx in (-0.68, 0.68)]
    return [head, *ears]  # All filled.
  raise ValueError(f'unknown shape {shape!r}; known: {", ".join(SHAPES + PETS)}')


_HOLES = ('ring', 'crescent')  # Their second polygon is cut out of the first.


@functools.lru_cache(maxsize=None)
def _unit_area(shape: str) -> float:
  """The outline's own area at unit scale, measured once on a fine grid: it sets the scale for a drawn area."""
  unit = _coverage(
    _unit_outline(shape), shape in _HOLES, 128, 128, lambda p: ((p[0] + 1.5) * 128 / 3, (p[1] + 1.5) * 128 / 3)
  )
  return float(unit.sum() / (128 / 3) ** 2)


def _mask(rng: np.random.Generator, shape: str, height: int, width: int, style: Style) -> np.ndarray:
  """float32 (H, W) coverage in [0, 1] of the object, placed, scaled, stretched and rotated at random."""
  polygons = _unit_outline(shape)
  holes = shape in _HOLES
  area = rng.uniform(*style.area) * height * width
  stretch = math.exp(rng.uniform(*np.log(style.stretch)))
  angle = math.radians(rng.uniform(-style.rotation, style.rotation))
  scale = math.sqrt(area / _unit_area(shape))
  sx, sy = scale * math.sqrt(stretch), scale / math.sqrt(stretch)
  cos, sin = math.cos(angle), math.sin(angle)
  corners = [
    (sx * x * cos - sy * y * sin, sx * x * sin + sy * y * cos) for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))
  ]
  half_w = min(max(abs(x) for x, _ in corners), width / 2)
  half_h = min(max(abs(y) for _, y in corners), height / 2)
  # The same draws as uniform(half_w, width - half_w) when spread = 1.
  room_w, room_h = style.spread * (width / 2 - half_w), style.spread * (height / 2 - half_h)
  cx, cy = width / 2 + rng.uniform(-room_w, room_w), height / 2 + rng.uniform(-room_h, room_h)

  def place(p):
    x, y = sx * p[0], sy * p[1]
    return cx + x * cos - y * sin, cy + x * sin + y * cos

  return _coverage(polygons, holes, height, width, place)


def _coverage(polygons, holes: bool, height: int, width: int, place) -> np.ndarray:
  s = _SUPERSAMPLE
  canvas = Image.new('L', (width * s, height * s), 0)
  draw = ImageDraw.Draw(canvas)
  for i, polygon in enumerate(polygons):
    draw.polygon([(x * s, y * s) for x, y in map(place, polygon)], fill=0 if holes and i % 2 else 255)
  return np.asarray(canvas.resize((width, height), Image.BOX), np.float32) / 255.0


def _colour(rng: np.random.Generator) -> np.ndarray:
  """A random colour: any hue, saturation and value (greys and near-blacks included)."""
  return np.asarray(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 1) ** 0.7, rng.uniform(0.1, 1.0))) * 255


def _fill(rng: np.random.Generator, height: int, width: int, textured: bool | str) -> np.ndarray:
  """float32 (H, W, 3): one colour, or a gradient or stripes between two ('gradient', 'stripes', True: either)."""
  a, b = _colour(rng), _colour(rng)
  if not textured or textured == 'flat':
    return np.broadcast_to(a, (height, width, 3)).astype(np.float32)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = rng.uniform(0, np.pi)
  along = (x * math.cos(angle) + y * math.sin(angle)) / max(height, width)
  if textured == 'gradient' or (textured is True and rng.uniform() < 0.5):
    mix = (along - along.min()) / max(np.ptp(along), 1e-6)
  else:
    mix = (np.sin(2 * np.pi * along * rng.uniform(3, 8) + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
  return (a * (1 - mix[..., None]) + b * mix[..., None]).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int, style: Style) -> np.ndarray:
  """float32 (H, W, 3): a flat, gradient, striped or noisy ground with distractors that are no class's shape."""
  kind = style.grounds[rng.integers(len(style.grounds))]
  if kind == 'noise':  # Smooth noise: blurred random colours.
    small = rng.uniform(0, 255, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    ground = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
  elif kind in ('flat', 'gradient', 'stripes'):
    ground = _fill(rng, height, width, textured=kind)
  else:
    raise ValueError(f'unknown ground {kind!r}; known: flat, gradient, stripes, noise')
  canvas = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(canvas)
  side = min(height, width)
  for _ in range(rng.integers(style.clutter[0], style.clutter[1] + 1)):
    colour = tuple(int(v) for v in _colour(rng))
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    if rng.uniform() < 0.6:  # A line.
      length, angle = rng.uniform(0.2, 0.6) * side, rng.uniform(0, np.pi)
      draw.line(
        [(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))],
        fill=colour,
        width=max(1, int(rng.uniform(0.01, 0.04) * side)),
      )
    else:  # A dot, far smaller than any object.
      r = rng.uniform(0.01, 0.035) * side
      draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
  canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
  return np.asarray(canvas, np.float32)


def picture_size(rng: np.random.Generator, style: Style) -> tuple[int, int]:
  """(height, width): `style.size` on average, aspect ratio log-uniform in `style.aspect`."""
  aspect = math.exp(rng.uniform(*np.log(style.aspect)))
  side = style.size * math.exp(rng.uniform(math.log(0.85), math.log(1.15)))
  return max(8, round(side / math.sqrt(aspect))), max(8, round(side * math.sqrt(aspect)))


def render(
  rng: np.random.Generator,
  shape: str,
  style: Style = HARD,
  size: tuple[int, int] | None = None,
  *,
  with_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """One uint8 (H, W, 3) picture of `shape` (one of SHAPES or PETS); `size` fixes (H, W), else it is drawn.

  `with_mask=True` returns (picture, mask): the mask is the object's float32 (H, W) coverage in [0, 1]
  (antialiased at the outline), and the picture the same pixels, from the same draws, as without it.
  """
  height, width = size or picture_size(rng, style)
  ground = _background(rng, height, width, style)
  coverage = _mask(rng, shape, height, width, style)[..., None]
  obj = _fill(rng, height, width, textured=bool(rng.uniform() < style.textured))
  # Keep the object visible: a fill too close to the ground beneath it is replaced by its complement.
  under = (ground * coverage).sum((0, 1)) / max(coverage.sum(), 1e-6)
  if np.abs(obj.mean((0, 1)) - under).sum() < 120:
    obj = 255 - obj if np.abs(255 - obj.mean((0, 1)) - under).sum() > np.abs(obj.mean((0, 1)) - under).sum() else obj
  image = ground * (1 - coverage) + obj * coverage
  image += rng.normal(0, rng.uniform(0, 8), image.shape)  # Sensor noise of random strength.
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return (image, coverage[..., 0]) if with_mask else image


def make_folder(
  root: str, classes=SHAPES, per_class: int = 100, style: Style = HARD, seed: int = 0, fmt: str = 'png'
) -> dict[str, list[str]]:
  """Writes `root/<class>/<i>.<fmt>` (`data.source=folder`'s layout); returns the paths per class.

  `classes` is a sequence of names from SHAPES/PETS, or a count (the first N of SHAPES). Pictures
  are interleaved across classes as they are drawn, so any prefix of the seed's stream is balanced.
  """
  classes = SHAPES[:classes] if isinstance(classes, int) else tuple(classes)
  rng = np.random.default_rng(seed)
  paths: dict[str, list[str]] = {name: [] for name in classes}
  for name in classes:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  for i in range(per_class):
    for name in classes:
      path = os.path.join(root, name, f'{i}.{fmt}')
      Image.fromarray(render(rng, name, style)).save(path, **({'quality': 92} if fmt == 'jpg' else {}))
      paths[name].append(path)
  return paths


def colour_statistics(image: np.ndarray) -> np.ndarray:
  """Per-image colour features a shortcut would use: channel means, spreads and 4-bin histograms (18 numbers)."""
  x = np.asarray(image, np.float32).reshape(-1, 3) / 255.0
  histograms = [np.histogram(x[:, c], bins=4, range=(0, 1))[0] / len(x) for c in range(3)]
  return np.concatenate([x.mean(0), x.std(0), *histograms]).astype(np.float32)


def colour_probe_accuracy(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  steps: int = 500,
  learning_rate: float = 0.5,
) -> float:
  """Test accuracy of a softmax regression on colour features: near chance when colour says nothing of the class."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  a, b = (train_x - mean) / std, (test_x - mean) / std
  k = int(max(train_y.max(), test_y.max())) + 1
  w, bias = np.zeros((a.shape[1], k)), np.zeros(k)
  onehot = np.eye(k)[train_y]
  for _ in range(steps):  # Full-batch gradient descent on the cross-entropy.
    logits = a @ w + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - onehot) / len(a)
    w -= learning_rate * (a.T @ grad + 1e-3 * w)
    bias -= learning_rate * grad.sum(0)
  return float(np.mean((b @ w + bias).argmax(1) == test_y))


def main(argv=None) -> None:
  """`python -m tinycats.data.shapes OUT_DIR`: a shape folder to train on with `data.source=folder`."""
  parser = argparse.ArgumentParser(prog='python -m tinycats.data.shapes', description=main.__doc__)
  parser.add_argument('out_dir')
  parser.add_argument('--classes', default='10', help="a count (the first N of SHAPES), or names: 'cat,dog'")
  parser.add_argument('--per-class', type=int, default=300)
  parser.add_argument('--style', choices=('hard', 'easy', 'flat', 'centred'), default='easy')
  parser.add_argument('--size', type=int, default=None, help="mean picture side in pixels (the style's own by default)")
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  style = {'hard': HARD, 'easy': EASY, 'flat': FLAT, 'centred': CENTRED}[args.style]
  if args.size:
    style = dataclasses.replace(style, size=args.size)
  classes = SHAPES[: int(args.classes)] if args.classes.isdigit() else tuple(args.classes.split(','))
  unknown = [name for name in classes if name not in SHAPES + PETS]
  if unknown:
    parser.error(f'unknown classes {unknown}; known: {", ".join(SHAPES + PETS)}')
  paths = make_folder(args.out_dir, classes, args.per_class, style, args.seed)
  print(f'{sum(map(len, paths.values()))} pictures of {len(paths)} classes in {args.out_dir}')


if __name__ == '__main__':
  main()
