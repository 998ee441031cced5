"""Metric rows to `metrics.jsonl` and TensorBoard, from process 0 only."""

import json
import os
from typing import Any, Mapping

from clu import metric_writers
import jax


class MetricsWriter:
  """Appends one JSON object per row and mirrors scalars to TensorBoard."""

  def __init__(self, model_dir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(model_dir, 'metrics.jsonl')
    self._tensorboard = metric_writers.create_default_writer(
        os.path.join(model_dir, 'tensorboard'), just_logging=not self.enabled,
        asynchronous=False)

  def write(self, row: Mapping[str, Any]) -> None:
    """Writes a row with at least `step` and `kind`."""
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    prefix = '/'.join(str(row[k]) for k in ('kind', 'objective', 'task') if k in row)
    scalars = {f'{prefix}/{k}': v for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != 'step'}
    self._tensorboard.write_scalars(int(row['step']), scalars)

  def close(self) -> None:
    self._tensorboard.flush()
    self._tensorboard.close()


def read(model_dir: str) -> list[dict]:
  """All rows of a model_dir's metrics.jsonl."""
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]
