"""The library's layers import one way, read from the code's own imports.

Low to high: `common` (errors, files, console) < `core` (network, objectives,
schedules, trainer, partitioning, checkpoints; no gin, no TensorFlow) <
`interop` (checkpoint import/export, Hugging Face formats) < `inference`
(predictor, tokenizer) < `config` (gin) < `tasks` (the user package) < `data`
(pipelines, input workers) < `training` (run, loop, evaluation, metrics) < the
command-line tools at the package root (`freelm_jax/train.py`, ...). A module
imports its own layer and those below, never one above.
"""

import ast
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ('common', 'core', 'interop', 'inference', 'config', 'tasks', 'data', 'training',
          'commands')
# Third-party packages a layer may not import (directly or by a function-level import).
FORBIDDEN = {
    'common': {'gin', 'jax', 'flax', 'tensorflow', 'seqio', 'tensorflow_datasets'},
    'core': {'gin', 'tensorflow', 'seqio', 'tensorflow_datasets'},
    # interop reads a model_dir's config.gin with gin's parser (no gin config).
    'interop': {'tensorflow', 'seqio', 'tensorflow_datasets'},
    'inference': {'gin', 'tensorflow', 'seqio', 'tensorflow_datasets'},
    'config': {'tensorflow', 'seqio', 'tensorflow_datasets'},
}
# The one place below `data` that imports TensorFlow, by design: it does so
# quietly, for the layers above (console.import_tensorflow_quietly).
ALLOWED = {('freelm_jax/common/console.py', 'tensorflow')}
# Function-level imports in the library, each with its reason beside it.
MAX_FUNCTION_LEVEL_IMPORTS = 5


def _layer(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).parts
  if parts[0] == 'tasks':
    return 'tasks'
  if len(parts) == 2:  # freelm_jax/<module>.py
    return 'inference' if parts[1] == '__init__.py' else 'commands'
  return parts[1]


def _target_layer(module: str) -> str:
  parts = module.split('.')
  if parts[0] == 'tasks':
    return 'tasks'
  if len(parts) == 1 or parts[1] not in LAYERS:
    return 'commands'
  return parts[1]


def _imports(tree: ast.Module):
  """(module, lineno, function_level) for each import of the module."""
  top = {id(node) for node in tree.body}
  for node in tree.body:  # `if TYPE_CHECKING:` imports: for annotations, module-level
    if isinstance(node, ast.If) and getattr(node.test, 'id', None) == 'TYPE_CHECKING':
      top |= {id(child) for child in node.body}
  for node in ast.walk(tree):
    level = id(node) not in top
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno, level
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == 'freelm_jax':  # from freelm_jax import cli
        for alias in node.names:
          yield f'freelm_jax.{alias.name}', node.lineno, level
      else:
        for alias in node.names:  # from freelm_jax.core import network
          yield (f'{node.module}.{alias.name}' if node.module.startswith('freelm_jax')
                 else node.module), node.lineno, level


def _sources():
  for path in sorted((REPO / 'freelm_jax').rglob('*.py')) + sorted((REPO / 'tasks').glob('*.py')):
    yield path, ast.parse(path.read_text())


def test_the_layers_are_the_library_s_subpackages():
  packages = {p.name for p in (REPO / 'freelm_jax').iterdir()
              if (p / '__init__.py').exists()}
  assert packages == set(LAYERS) - {'tasks', 'commands'}


def test_each_module_imports_its_layer_and_those_below_only():
  wrong = []
  for path, tree in _sources():
    layer = _layer(path)
    for module, line, _ in _imports(tree):
      if module.split('.')[0] not in ('freelm_jax', 'tasks'):
        continue
      target = _target_layer(module)
      if LAYERS.index(target) > LAYERS.index(layer):
        wrong.append(f'{path.relative_to(REPO)}:{line}: {layer} imports {module} ({target})')
  assert not wrong, '\n'.join(wrong)


def test_lower_layers_import_neither_tensorflow_nor_gin_where_they_must_not():
  wrong = []
  for path, tree in _sources():
    forbidden = FORBIDDEN.get(_layer(path), set())
    for module, line, _ in _imports(tree):
      top = module.split('.')[0]
      if top in forbidden and (str(path.relative_to(REPO)), top) not in ALLOWED:
        wrong.append(f'{path.relative_to(REPO)}:{line}: imports {module}')
  assert not wrong, '\n'.join(wrong)


def test_function_level_imports_are_few_and_give_their_reason():
  found = []
  for path, tree in _sources():
    lines = path.read_text().splitlines()
    for module, line, function_level in _imports(tree):
      if function_level:
        context = ' '.join(lines[max(0, line - 5):line]).lower()
        assert 'lazy' in context or 'quietly' in context or 'optional' in context, (
            f'{path.relative_to(REPO)}:{line}: import of {module} inside a function '
            'without its reason beside it')
        found.append(f'{path.relative_to(REPO)}:{line} {module}')
  assert len(found) <= MAX_FUNCTION_LEVEL_IMPORTS, '\n'.join(found)


@pytest.mark.parametrize('layer', ['common', 'core', 'interop', 'inference', 'config'])
def test_a_layer_below_data_loads_without_tensorflow(layer):
  code = ('import importlib, pkgutil, sys\n'
          f'import freelm_jax.{layer} as package\n'
          'for m in pkgutil.iter_modules(package.__path__):\n'
          f'  importlib.import_module("freelm_jax.{layer}." + m.name)\n'
          'print(sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "seqio", "tasks")))')
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.stdout.strip() == '[]', out.stderr[-2000:]
