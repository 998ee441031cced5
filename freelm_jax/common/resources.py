"""Files that ship with the project: the gin configs and `tasks/data`.

In a source checkout they sit beside the packages (`gin/`, `tasks/data/`); a
`pip install` puts the gin configs inside the package (`freelm_jax/gin/`) and
`tasks/data/` inside `tasks`. A relative path such as `gin/base.gin` or
`tasks/data/opinions` is taken from the working directory when it exists
there, else from wherever the project is installed, so every command works
from any directory. Run outputs (`runs/...`) stay relative to the working
directory.
"""

import os
from typing import Optional

# This file is freelm_jax/common/resources.py.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where `freelm_jax` and `tasks` sit side by side (a checkout or site-packages).
_SOURCE_ROOT = os.path.dirname(_PACKAGE_DIR)


def gin_dir() -> str:
  """The directory of the shipped gin configs (`base.gin`, `runs/`, `models/`, ...)."""
  installed = os.path.join(_PACKAGE_DIR, 'gin')
  return installed if os.path.isdir(installed) else os.path.join(_SOURCE_ROOT, 'gin')


def tasks_data_dir() -> str:
  """The directory of the data shipped with `tasks` (vocabularies, the demo's text)."""
  return os.path.join(_SOURCE_ROOT, 'tasks', 'data')


def _shipped_roots() -> dict[str, str]:
  """A path prefix as the docs write it -> where it lives in this install."""
  return {'gin': gin_dir(), os.path.join('tasks', 'data'): tasks_data_dir()}


def shipped(path: str) -> Optional[str]:
  """The shipped file or directory a relative `gin/...` or `tasks/data/...`
  path names, or None."""
  if os.path.isabs(path):
    return None
  normal = os.path.normpath(path)
  for prefix, root in _shipped_roots().items():
    if normal == prefix or normal.startswith(prefix + os.sep):
      candidate = os.path.join(root, os.path.relpath(normal, prefix))
      if os.path.exists(candidate):
        return candidate
  return None


def resolve(path: str) -> str:
  """`path` itself when it exists (from the working directory), else the
  shipped file it names (`shipped`), else `path` unchanged for the caller's
  own not-found error."""
  if os.path.exists(path):
    return path
  return shipped(path) or path


def shown(path: str) -> str:
  """A shipped gin file as the docs name it (`gin/paper.gin`), else `path`."""
  root = gin_dir()
  if os.path.abspath(path).startswith(root + os.sep):
    return os.path.join('gin', os.path.relpath(os.path.abspath(path), root))
  return path


def source_dirs() -> tuple[str, ...]:
  """The directories of this project's Python code (for log filtering)."""
  return tuple(os.path.join(_SOURCE_ROOT, name) + os.sep for name in ('freelm_jax', 'tasks'))
