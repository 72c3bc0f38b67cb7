"""The import graph of `tinycats`: no cycles, and each layer imports only the layers below it.

Read from the source (every `import`, including those inside functions), so a violation fails here
whether or not any test happens to run the importing code.
"""

import ast
import os
import shutil

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tinycats')

# Lowest first; a module may import its own layer (without a cycle) and those below. The first
# prefix that matches a module's name gives its layer.
LAYERS = (
  (
    'tinycats.errors',
    'tinycats.files',
    'tinycats.metrics',
    'tinycats.writers',
    'tinycats.plots',
    'tinycats.config',
    'tinycats.stored_config',
  ),
  ('tinycats.models', 'tinycats.flow', 'tinycats.data', 'tinycats.sharding', 'tinycats.pretrained'),
  ('tinycats.evaluators',),  # Below train/: the training tasks and `tinycats evaluate` run the same evaluators.
  ('tinycats.train',),
  ('tinycats.inference',),
  ('tinycats.classifier', 'tinycats.generator'),
  ('tinycats.evaluate',),
  ('tinycats.export',),
  ('tinycats.cli', 'tinycats.__main__', 'tinycats'),
)
# Heavy optional packages that may be imported inside a function, where only one command needs them.
LAZY_OK = ('torch', 'onnx', 'onnxruntime', 'jax2onnx', 'modal', 'tensorflow', 'tensorflow_datasets', 'tensorboardX')
# The commands import what each one runs inside it, so that building the parser (`tinycats --help`) imports no JAX.
COMMANDS = 'tinycats.cli'


def _modules(root: str = ROOT) -> dict[str, str]:
  """{'tinycats.train.loop': path} for every module under `root`."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, os.path.dirname(root))[:-3].split(os.sep)
        out['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return out


def _imports(path: str, modules, package: str = 'tinycats') -> tuple[set[str], list[str]]:
  """(the `package` modules this file imports, 'line: name' for each import inside a function that may not be)."""
  tree = ast.parse(open(path).read(), path)
  inner = {
    id(node)
    for fn in ast.walk(tree)
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
    for node in ast.walk(fn)
  }
  found, lazy = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules else node.module for a in node.names]
    else:
      continue
    for name in names:
      if name.split('.')[0] == package:
        found.add(name)
      if id(node) in inner and name.split('.')[0] not in LAZY_OK:
        lazy.append(f'{node.lineno}: {name}')
  return found, lazy


def layer(module: str) -> int:
  for rank, prefixes in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in prefixes if p != 'tinycats'):
      return rank
  assert module == 'tinycats', f'{module} belongs to no layer: add it to LAYERS'
  return len(LAYERS) - 1


def graph(root: str = ROOT) -> dict[str, set[str]]:
  modules = _modules(root)
  return {name: {m for m in _imports(path, modules)[0] if m != name} for name, path in modules.items()}


def upward_imports(edges) -> list[str]:
  return sorted(
    f'{a} (layer {layer(a)}) imports {b} (layer {layer(b)})'
    for a, targets in edges.items()
    for b in targets
    if layer(b) > layer(a)
  )


def cycles(edges) -> list[list[str]]:
  """One cycle per strongly connected component with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_every_module_has_a_layer_and_imports_resolve():
  edges = graph()
  assert len(edges) > 40  # The walk found the package.
  for name, targets in edges.items():
    layer(name)
    assert targets <= set(edges), f'{name} imports {sorted(targets - set(edges))}, which are not modules'


def test_no_import_cycles():
  assert cycles(graph()) == []


def test_no_layer_imports_a_layer_above_it():
  edges = graph()
  assert upward_imports(edges) == []
  for low in (
    'tinycats.train',
    'tinycats.evaluators',
    'tinycats.data',
    'tinycats.models',
    'tinycats.flow',
    'tinycats.sharding',
  ):
    for name in (n for n in edges if n == low or n.startswith(low + '.')):
      assert all(layer(b) <= layer(name) for b in edges[name])
  train = {b for a, targets in edges.items() if a.startswith('tinycats.train') for b in targets}
  assert not train & {'tinycats.classifier', 'tinycats.generator', 'tinycats.evaluate', 'tinycats.inference'}
  assert not any(b.startswith('tinycats.export') for b in train)


def test_nothing_outside_train_imports_its_tasks():
  """train/tasks is private to train/: the layers above use `train.public`, the evaluators sit below train/."""
  edges = graph()
  tasks = 'tinycats.train.tasks'
  outside = {
    a: sorted(b for b in targets if b == tasks or b.startswith(tasks + '.'))
    for a, targets in edges.items()
    if not (a == 'tinycats.train' or a.startswith('tinycats.train.'))
  }
  assert {a: found for a, found in outside.items() if found} == {}
  assert 'tinycats.train.tasks' in edges['tinycats.train.public']  # The check sees the imports it is about.


def test_imports_inside_functions_are_only_optional_heavy_packages():
  modules = _modules()
  lazy = {name: _imports(path, modules)[1] for name, path in modules.items() if not name.startswith(COMMANDS)}
  assert {name: found for name, found in lazy.items() if found} == {}


def test_only_the_cli_reaches_the_benchmarks_and_only_from_inside_a_function():
  modules = _modules()
  reach = {name: _imports(path, modules, 'benchmarks')[0] for name, path in modules.items()}
  assert {name: found for name, found in reach.items() if found} == {'tinycats.cli': {'benchmarks'}}
  assert any(line.endswith(': benchmarks') for line in _imports(modules['tinycats.cli'], modules)[1])


def test_the_bench_command_imports_nothing_heavy_until_it_runs():
  """`tinycats --help` builds every parser, `bench`'s included: `benchmarks.command` loads JAX only in `run`."""
  path = os.path.join(os.path.dirname(ROOT), 'benchmarks', 'command.py')
  top = set()
  for node in ast.parse(open(path).read(), path).body:
    if isinstance(node, ast.Import):
      top |= {alias.name.split('.')[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      top.add(node.module.split('.')[0])
  assert top <= {'__future__', 'os'}, top


@pytest.mark.parametrize(
  'module, bad, cycle',
  [
    ('train/loop.py', 'from tinycats import evaluate', False),
    ('train/state.py', 'from tinycats import inference', True),  # inference imports train.state.
    ('models/ema.py', 'from tinycats.train import step', False),
  ],
)
def test_the_checks_fail_on_an_upward_import_or_a_cycle(tmp_path, module, bad, cycle):
  """A copy of the package with one bad import added fails the checks that should catch it."""
  root = tmp_path / 'tinycats'
  shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns('__pycache__'))
  path = root / module
  text = path.read_text()
  path.write_text(text.replace('\nimport ', f'\n{bad}\nimport ', 1))
  edges = graph(str(root))
  name = 'tinycats.' + module[:-3].replace('/', '.')
  assert any(line.startswith(name + ' ') for line in upward_imports(edges))
  assert any(name in found for found in cycles(edges)) == cycle
