"""The docs name only flags and config fields that exist.

Every `--flag` in a `tinycats ...` or `python -m launch.modal_train ...` command in README.md and docs/*.md must
be one that command's argparse parser takes; every config field they name (`--config.a.b=...`, `--set a.b=...`,
`config.a.b` in code, or `a.b` written alone as code) must be a field of one of the configs in configs/.
"""

import argparse
import glob
import os
import re

import pytest
from conftest import REPO

from launch import modal_train
from tinycats import cli, config as config_lib

DOCS = [os.path.join(REPO, 'README.md'), *sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))]
CONFIGS = [
  'configs/cats.py',
  'configs/cats.py:scratch',
  'configs/cats.py:smoke',
  'configs/dit.py',
  'configs/dit.py:patch8',
  'configs/dit.py:smoke',
]
GROUPS = ('model', 'data', 'train', 'flow', 'sample', 'ema', 'modal')
FIELD = r'(?:' + '|'.join(GROUPS) + r')(?:\.[a-z_][a-z0-9_]*)+'
FILES = ('.json', '.jsonl', '.safetensors', '.onnx', '.png', '.py', '.md', '.pth')


def _code(text: str) -> list[str]:
  """The code in markdown: each line of a fenced block (backslash continuations joined), each inline span."""
  out, fenced = [], re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)
  for block in fenced:
    out += [line for line in block.replace('\\\n', ' ').split('\n') if line.strip()]
  prose = re.sub(r'```.*?```', '', text, flags=re.S)
  out += re.findall(r'`([^`\n]+)`', prose)
  return out


def _commands(code: str) -> list[tuple[str, list[str]]]:
  """(program words, the command's tokens) for each `tinycats SUB ...` / `python -m launch.modal_train ...` in it."""
  code = code.replace('\\|', '|').split(' # ')[0]
  found = []
  for match in re.finditer(r'(?:^|[\s/])(tinycats|launch\.modal_train)(?=\s)', code):
    if re.search(r'\b(from|import)\s*$', code[: match.start(1)]):  # Python: `from tinycats import ...`.
      continue
    rest = re.split(r'&&|\|\||;', code[match.end() :])[0].split()
    if match.group(1) == 'launch.modal_train':
      found.append((['launch.modal_train'], rest))
    elif rest and re.fullmatch(r'[a-z]+', rest[0]):
      words = rest[:2] if rest[0] == 'export' and len(rest) > 1 and re.fullmatch(r'[a-z]+', rest[1]) else rest[:1]
      found.append((['tinycats', *words], rest[len(words) :]))
  return found


def _parser(words: list[str]) -> argparse.ArgumentParser | None:
  if words == ['launch.modal_train']:
    return modal_train.build_parser()
  parser = cli.build_parser()
  for word in words[1:]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if not subs or word not in subs[0].choices:
      return None
    parser = subs[0].choices[word]
  return parser


def bad_flags(text: str) -> list[str]:
  """'tinycats bench --nope' for every flag a documented command does not take (and every unknown subcommand)."""
  bad = []
  for code in _code(text):
    for words, tokens in _commands(code):
      parser = _parser(words)
      if parser is None:
        bad.append(f'{" ".join(words)}: no such command')
        continue
      known = {s for action in parser._actions for s in action.option_strings}  # noqa: SLF001
      for token in tokens:
        flag = re.match(r'\[?(--[a-z][a-z0-9-]*)(?![a-z0-9.-])', token)
        if flag and flag.group(1) not in known:
          bad.append(f'{" ".join(words)} {flag.group(1)}')
  return bad


def _fields() -> set[str]:
  fields = set()
  for spec in CONFIGS:
    fields |= set(config_lib.leaves(config_lib.load_config_file(os.path.join(REPO, spec))))
  return fields


def bad_fields(text: str, fields: set[str]) -> list[str]:
  """Every config field the text names that no config has (`group.*` needs the group)."""
  named = set()
  for code in _code(text):
    named |= set(re.findall(r'(?:--config\.|--set |\bconfig\.)(' + FIELD + ')', code))
    alone = re.fullmatch(r'(' + FIELD + r')(?:\.\*)?(?:=.*)?', code.strip())
    if alone and not alone.group(1).endswith(FILES):
      named.add(alone.group(1) + ('.*' if code.strip().startswith(alone.group(1) + '.*') else ''))
  bad = []
  for name in sorted(named):
    if name.endswith('.*'):
      ok = any(f.startswith(name[:-1]) for f in fields)
    else:
      ok = name in fields or any(f.startswith(name + '.') for f in fields)  # A group (`config.modal`) too.
    if not ok:
      bad.append(name)
  return bad


@pytest.mark.parametrize('path', DOCS, ids=os.path.basename)
def test_documented_flags_exist(path):
  with open(path) as f:
    assert bad_flags(f.read()) == []


@pytest.mark.parametrize('path', DOCS, ids=os.path.basename)
def test_documented_config_fields_exist(path):
  with open(path) as f:
    assert bad_fields(f.read(), _fields()) == []


def test_the_checks_find_what_does_not_exist():
  text = """
`from tinycats import cli`. Run `tinycats train --config configs/cats.py --workdir w --epochs 3`
or `tinycats fly --high`, then
```bash
python -m launch.modal_train --config configs/cats.py \\
    --gpus 8 --config.train.batchsize=3   # --not-this (a comment)
tinycats export onnx --workdir w --out-dir o --int4
```
Set `train.learning_rat` (`train.learning_rate` exists; `model.safetensors` is a file), `--set data.sizes=3`,
`modal.*` and `nothing.*`, `config.flow.timesteps`, `config.ema.rate`.
"""
  assert sorted(bad_flags(text)) == [
    'launch.modal_train --gpus',
    'tinycats export onnx --int4',
    'tinycats fly: no such command',
    'tinycats train --epochs',
  ]
  assert bad_fields(text, _fields()) == ['data.sizes', 'ema.rate', 'train.batchsize', 'train.learning_rat']


def _module_map() -> set[str]:
  """The files docs/design.md's module map names: each line's first word ('  x.py' is tinycats/x.py)."""
  text = open(os.path.join(REPO, 'docs', 'design.md')).read()
  block = re.search(r'## Module map\n+```\n(.*?)```', text, flags=re.S)
  assert block, 'docs/design.md has no "## Module map" code block'
  named = set()
  for line in block[1].splitlines():
    word = line.split()[0] if line.strip() else ''
    if word.endswith('.py'):
      named.add(os.path.join('tinycats', word) if line.startswith(' ') else word)
  return named


def test_the_module_map_names_every_module_and_only_modules_that_exist():
  """A newcomer reads the tree from docs/design.md: every module of the library, the commands and the tools is
  there (an `__init__.py` with code too), and nothing it names is gone."""
  named = _module_map()
  modules = {
    os.path.relpath(path, REPO)
    for folder in ('tinycats', 'launch', 'configs', 'benchmarks')
    for path in glob.glob(os.path.join(REPO, folder, '**', '*.py'), recursive=True)
    if os.path.basename(path) not in ('__init__.py', '__main__.py') or len(open(path).read().splitlines()) > 12
  }
  assert sorted(modules - named) == [], 'modules docs/design.md does not name'
  assert sorted(p for p in named if not os.path.isfile(os.path.join(REPO, p))) == [], 'named but missing'
