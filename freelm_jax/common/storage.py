"""Model_dir paths on local disk or on any store `etils.epath` reaches (gs://, s3://).

Every file a run writes to its model_dir outside orbax goes through these
`epath.Path`s, so a `gs://bucket/run` model_dir works like a local one. Object
stores cannot append to a file: `metrics.py` writes per-writer part files there.
"""

import os

from etils import epath


def is_remote(path: str) -> bool:
  """Whether `path` names an object store (gs://, s3://, ...), not a local path."""
  return '://' in str(path)


def resolve(path: str) -> epath.Path:
  """`path` as an `epath.Path`; a local one made absolute (orbax needs that)."""
  return epath.Path(path if is_remote(path) else os.path.abspath(path))
