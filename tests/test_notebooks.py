"""The notebooks run top to bottom (nbclient, a fresh kernel each); all but WITH_OUTPUTS are committed without
outputs, and those with the outputs of one real run (for a reader on GitHub to see the plots)."""

import os
import re

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks')
# Committed with their outputs, so that a reader on GitHub sees the plots; the others are committed without.
WITH_OUTPUTS = {'04_what_the_classifier_sees.ipynb', '05_inside_the_generator.ipynb'}


def run(name, **env):
  notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  for cell in notebook.cells:  # From the committed code alone: none of the committed outputs is counted.
    if cell.cell_type == 'code':
      cell.outputs, cell.execution_count = [], None
  with pytest.MonkeyPatch.context() as mp:  # The kernel inherits this process's environment.
    for key, value in env.items():
      mp.setenv(key, value)
    nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': NOTEBOOKS}}
    ).execute()
  return notebook


def outputs(notebook, kind='image/png'):
  return [
    o
    for cell in notebook.cells
    if cell.cell_type == 'code'
    for o in cell.get('outputs', [])
    if kind in o.get('data', {})
  ]


def test_committed_without_outputs_but_those_meant_to_show_them():
  home, repo = os.path.expanduser('~'), os.path.dirname(NOTEBOOKS)
  for name in sorted(os.listdir(NOTEBOOKS)):
    if not name.endswith('.ipynb'):
      continue
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == 'code']
    if name not in WITH_OUTPUTS:
      assert all(not c.get('outputs') and not c.get('execution_count') for c in code), name
      continue
    # Run once, in order, without errors, and showing its figures; no path of the machine that ran it.
    assert [c.get('execution_count') for c in code] == list(range(1, len(code) + 1)), name
    assert not outputs(notebook, 'ename') and not [o for c in code for o in c.outputs if o.output_type == 'error']
    assert outputs(notebook), f'{name}: no figures'
    text = nbformat.writes(notebook)
    assert repo not in text and home not in text, f'{name} shows a path of the machine that ran it'


def test_classify_notebook(folder_run, tmp_path):
  notebook = run('01_classify.ipynb', TINYCATS_CLASSIFIER=folder_run[0], TINYCATS_NOTEBOOK_DIR=str(tmp_path))
  assert len(outputs(notebook)) == 2  # The predictions and the confusion matrix.


def test_generate_notebook(generator_run, tmp_path):
  notebook = run('02_generate.ipynb', TINYCATS_GENERATOR=generator_run[0], TINYCATS_NOTEBOOK_DIR=str(tmp_path))
  assert len(outputs(notebook)) == 2  # The class grid and the guidance x steps grid.


def test_train_and_export_notebook(tmp_path):
  notebook = run('03_train_and_export.ipynb', TINYCATS_NOTEBOOK_DIR=str(tmp_path), TINYCATS_NOTEBOOK_STEPS='30')
  assert os.path.isfile(tmp_path / 'export' / 'cats.onnx') and os.path.isfile(tmp_path / 'run' / 'eval.json')
  assert len(outputs(notebook)) == 1  # The curves.


def test_what_the_classifier_sees_notebook(folder_run, tmp_path):
  notebook = run(
    '04_what_the_classifier_sees.ipynb',
    TINYCATS_CLASSIFIER=folder_run[0],
    TINYCATS_NOTEBOOK_DIR=str(tmp_path),
    TINYCATS_SALIENCY_MARGIN='1.0',  # The tiny cat/dog classifier (ears: a small part of the head): above chance.
  )
  printed = ''.join(o.get('text', '') for c in notebook.cells if c.cell_type == 'code' for o in c.outputs)
  share, chance, ratio = map(
    float, re.search(r'inside the object: ([\d.]+) .*?chance .*? ([\d.]+); ratio ([\d.]+)', printed).groups()
  )
  assert share > chance and ratio > 1  # The cell itself asserts its margin over chance.
  assert re.search(r'ECE [\d.]+ on \d+ test images', printed)
  assert len(outputs(notebook)) >= 3  # Saliency and Grad-CAM, on the masks, calibration (and mistakes, if any).


# 05's sweeps cut to a few samples: what runs, not what it shows.
SMALL_SWEEPS = dict(
  TINYCATS_NOTEBOOK_PER_CLASS='2', TINYCATS_NOTEBOOK_STEP_COUNTS='1,2', TINYCATS_NOTEBOOK_GUIDANCES='1,2'
)


def test_inside_the_generator_notebook(generator_run, judge, tmp_path):
  notebook = run(
    '05_inside_the_generator.ipynb',
    TINYCATS_GENERATOR=generator_run[0],
    TINYCATS_CLASSIFIER=judge,
    TINYCATS_NOTEBOOK_DIR=str(tmp_path),
    **SMALL_SWEEPS,
  )
  # The path and x̂, their distance to the sample, the same noise under each label, the three sweeps.
  assert len(outputs(notebook)) == 6
  assert not os.listdir(tmp_path)  # Given both models, it trains nothing.


@pytest.mark.slow  # Each trains its own model first (40-50 s); the default run gives them the suite's runs.
@pytest.mark.parametrize(
  'name, figures', [('01_classify.ipynb', 2), ('02_generate.ipynb', 2), ('05_inside_the_generator.ipynb', 6)]
)
def test_notebooks_train_their_own_model_when_given_none(name, figures, tmp_path, monkeypatch):
  for key in ('TINYCATS_CLASSIFIER', 'TINYCATS_GENERATOR', 'TINYCATS_DATA_DIR'):
    monkeypatch.delenv(key, raising=False)
  notebook = run(name, TINYCATS_NOTEBOOK_DIR=str(tmp_path), **SMALL_SWEEPS)
  assert len(outputs(notebook)) == figures
  assert any(os.path.isfile(os.path.join(root, 'eval.json')) for root, _, _ in os.walk(tmp_path))  # Its own run.
