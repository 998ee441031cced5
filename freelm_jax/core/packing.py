"""Packs teacher propositions several to a row (numpy; no TensorFlow).

A packed teacher batch holds `tokens`, `positions`, `segment_ids` [rows, T]
(segments numbered from 1 in each row, 0 on padding; positions restart at 0
in each segment) and `cls_index`, `truth`, `task_type`, `weights`
[rows, max_per_row] (unused slots point at 0 and weigh 0). Causal attention
restricted to a segment makes every proposition independent of its row
mates, so `models.TeacherObjective` gives the loss of the unpacked batch.
"""

from typing import Iterable, Iterator, Mapping

import numpy as np

LABEL_KEYS = ('truth', 'task_type', 'weights')
# The shortest proposition: [sep], a token of the proposition, [cls].
MIN_PROPOSITION_LEN = 3


def max_per_row(row_len: int) -> int:
  """Propositions a packed row of `row_len` tokens can hold at most."""
  return row_len // MIN_PROPOSITION_LEN


def pack(propositions: Mapping[str, np.ndarray], rows: int, row_len: int,
         max_per_row: int, pad_id: int = 0) -> tuple[dict, int]:
  """Packs a prefix of `propositions` first-fit into `rows` rows of `row_len`.

  `propositions` is an unpacked teacher batch (`tokens` [N, T], `lengths`,
  `truth`, `task_type`, `weights` [N]). Packing stops at the first
  proposition no row has room for. Returns (packed batch, how many leading
  propositions it holds).
  """
  lengths = np.asarray(propositions['lengths'])
  if lengths.size and lengths.max() > row_len:
    raise ValueError(f'a proposition of {lengths.max()} tokens does not fit a packed '
                     f'row of {row_len}')
  batch = {k: np.full((rows, row_len), v, np.int32)
           for k, v in (('tokens', pad_id), ('positions', 0), ('segment_ids', 0))}
  batch.update(cls_index=np.zeros((rows, max_per_row), np.int32),
               truth=np.zeros((rows, max_per_row), np.int32),
               task_type=np.zeros((rows, max_per_row), np.int32),
               weights=np.zeros((rows, max_per_row), np.float32))
  used, count = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
  for i, length in enumerate(lengths):
    fits = np.flatnonzero((used + length <= row_len) & (count < max_per_row))
    if not fits.size:
      return batch, i
    row, start, slot = fits[0], used[fits[0]], count[fits[0]]
    batch['tokens'][row, start:start + length] = propositions['tokens'][i, :length]
    batch['positions'][row, start:start + length] = np.arange(length)
    batch['segment_ids'][row, start:start + length] = slot + 1
    batch['cls_index'][row, slot] = start + length - 1
    for key in LABEL_KEYS:
      batch[key][row, slot] = propositions[key][i]
    used[row] += length
    count[row] += 1
  return batch, len(lengths)


def packed_batches(batches: Iterable[Mapping[str, np.ndarray]], rows: int, row_len: int,
                   max_per_row: int, pad_id: int = 0) -> Iterator[dict]:
  """Packed batches from a stream of unpacked teacher batches, in stream order.

  Propositions that do not fit one packed batch start the next one, so none is
  dropped (the stream's last, partial packed batch is not yielded).
  """
  pending = None
  for batch in batches:
    batch = {k: np.asarray(batch[k]) for k in ('tokens', 'lengths') + LABEL_KEYS}
    pending = batch if pending is None else _concat(pending, batch)
    while True:
      packed, used = pack(pending, rows, row_len, max_per_row, pad_id)
      if used == len(pending['lengths']):
        break  # all fit: wait for more propositions to fill the rows.
      yield packed
      pending = {k: v[used:] for k, v in pending.items()}


def _concat(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict:
  """Joins two unpacked batches, padding `tokens` to the longer row length."""
  width = max(a['tokens'].shape[1], b['tokens'].shape[1])
  pad = lambda t: np.pad(t, ((0, 0), (0, width - t.shape[1])))
  return {k: np.concatenate([pad(a[k]), pad(b[k])] if k == 'tokens' else [a[k], b[k]])
          for k in a}
