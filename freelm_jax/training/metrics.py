"""Metric rows to `metrics.jsonl` and TensorBoard, from process 0 only.

A local model_dir gets one `metrics.jsonl`, appended to. Object stores (gs://,
s3://) cannot append, so there each writer (a train run, a resumed run, an
eval) rewrites its own `metrics_parts/<UTC start time>-<pid>.jsonl` with all
its rows on every write. `common.metrics_files.read` reads them back (also
`read` here).
"""

import datetime
import json
import os
from typing import Any, Mapping

from freelm_jax.common import console
from freelm_jax.common import metrics_files
from freelm_jax.common import storage

console.import_tensorflow_quietly()  # clu imports TensorFlow: quietly, first
# pylint: disable=g-import-not-at-top,wrong-import-position,wrong-import-order
from clu import metric_writers
import jax

read = metrics_files.read  # its home: the reader needs no TensorFlow


class MetricsWriter:
  """Writes one JSON object per row and mirrors scalars to TensorBoard."""

  def __init__(self, model_dir: str):
    self.enabled = jax.process_index() == 0
    directory = storage.resolve(model_dir)
    self._lines = None  # every row written so far, where a file cannot be appended to
    self.path = directory / 'metrics.jsonl'
    if storage.is_remote(model_dir):
      started = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')
      self.path = directory / metrics_files.PARTS_DIR / f'{started}-{os.getpid()}.jsonl'
      self._lines = []
      if self.enabled:
        self.path.parent.mkdir(parents=True, exist_ok=True)
    self._tensorboard = metric_writers.create_default_writer(
        str(directory / 'tensorboard'), just_logging=not self.enabled,
        asynchronous=False)

  def write(self, row: Mapping[str, Any]) -> None:
    """Writes a row with at least `step` and `kind`."""
    if not self.enabled:
      return
    line = json.dumps(row) + '\n'
    if self._lines is None:
      with self.path.open('a') as f:
        f.write(line)
    else:
      self._lines.append(line)
      self.path.write_text(''.join(self._lines))
    prefix = '/'.join(str(row[k]) for k in ('kind', 'objective', 'task') if k in row)
    scalars = {f'{prefix}/{k}': v for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != 'step'}
    self._tensorboard.write_scalars(int(row['step']), scalars)

  def close(self) -> None:
    self._tensorboard.flush()
    self._tensorboard.close()
