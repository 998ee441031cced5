r"""Builds GLUE_DIR: GLUE's train and validation splits as JSONL, and the paper's 1k samples.

  python -m freelm_jax.build_glue [--glue_dir=~/.cache/freelm_jax/glue]
      [--tfds_data_dir=DIR | --glue_files=DIR] [--tasks=sst2,cola,...] [--overwrite]

Writes `<task>.<split>.jsonl` for `train` and `validation` (MNLI's two
validation splits as `mnli_matched.validation.jsonl` and
`mnli_mismatched.validation.jsonl`), with TFDS's field names, labels and
`idx`, rows in `idx` order: the files `tasks/glue.py`'s local twin reads. Then
`<task>.paper1k.jsonl`: the validation rows the FreeLM authors sampled for
their evaluation (cofe-ai/FreeLM-Evaluation, data/evaluation/glue_sampled_1k;
all 872 rows for SST-2), in their order, picked by the `idx` values shipped in
tasks/data/glue_paper1k_ids.json.

Sources; nothing is downloaded:
  TFDS (the default): `glue/<task>:2.0.0` prepared in --tfds_data_dir
    (`tfds build glue/sst2 --data_dir=DIR`).
  --glue_files=DIR: the directory GLUE's download script writes (SST-2/,
    CoLA/, MNLI/, QQP/, STS-B/, QNLI/, RTE/, WNLI/; MRPC/ with
    msr_paraphrase_train.txt and dev_ids.tsv), read the way TFDS's builder
    reads it, so rows, labels and `idx` are TFDS's.

Each file is written to a temporary name and renamed into place; files that
exist are kept unless --overwrite.
"""

import csv
import dataclasses
import itertools
import json
import os
from typing import Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from freelm_jax.common import errors
from tasks import glue
from tasks import sources
from tasks import vocabulary as vocabulary_lib

DataError = sources.DataError
PAPER1K_IDS = os.path.join(vocabulary_lib.DATA_DIR, 'glue_paper1k_ids.json')


@dataclasses.dataclass(frozen=True)
class Columns:
  """How TFDS reads one GLUE task from GLUE's files (tensorflow_datasets' glue.py)."""
  folder: str  # GLUE's directory of the task
  text: dict  # output field -> TSV column
  label: str  # TSV column of the label
  classes: tuple = ()  # label names in TFDS's ClassLabel order; () = a float score


COLUMNS = {
    'cola': Columns('CoLA', {'sentence': 'sentence'}, 'is_acceptable',
                    ('unacceptable', 'acceptable')),
    'sst2': Columns('SST-2', {'sentence': 'sentence'}, 'label', ('negative', 'positive')),
    'mrpc': Columns('MRPC', {'sentence1': '#1 String', 'sentence2': '#2 String'}, 'Quality',
                    ('not_equivalent', 'equivalent')),
    'qqp': Columns('QQP', {'question1': 'question1', 'question2': 'question2'},
                   'is_duplicate', ('not_duplicate', 'duplicate')),
    'stsb': Columns('STS-B', {'sentence1': 'sentence1', 'sentence2': 'sentence2'}, 'score'),
    'mnli': Columns('MNLI', {'premise': 'sentence1', 'hypothesis': 'sentence2'}, 'gold_label',
                    ('entailment', 'neutral', 'contradiction')),
    'qnli': Columns('QNLI', {'question': 'question', 'sentence': 'sentence'}, 'label',
                    ('entailment', 'not_entailment')),
    'rte': Columns('RTE', {'sentence1': 'sentence1', 'sentence2': 'sentence2'}, 'label',
                   ('entailment', 'not_entailment')),
    'wnli': Columns('WNLI', {'sentence1': 'sentence1', 'sentence2': 'sentence2'}, 'label',
                    ('not_entailment', 'entailment')),
}
# Output file stem -> (TFDS config, {file split: TFDS split}).
FILES = {
    **{t: (t, {'train': 'train', 'validation': 'validation'}) for t in COLUMNS if t != 'mnli'},
    'mnli': ('mnli', {'train': 'train'}),
    'mnli_matched': ('mnli', {'validation': 'validation_matched'}),
    'mnli_mismatched': ('mnli', {'validation': 'validation_mismatched'}),
}
TASKS = tuple(COLUMNS)  # what --tasks names; `mnli` builds its three files
# TFDS split -> GLUE's file of it.
TSV_FILES = {'train': 'train.tsv', 'validation': 'dev.tsv',
             'validation_matched': 'dev_matched.tsv',
             'validation_mismatched': 'dev_mismatched.tsv'}
MRPC_FILES = ('msr_paraphrase_train.txt', 'dev_ids.tsv')  # both of MRPC's splits come from these


class Source(Protocol):
  """Where GLUE's rows come from."""

  def check(self, config: str, split: str) -> None:
    """Raises DataError, saying what to do, when the split cannot be read."""

  def rows(self, config: str, split: str) -> list[dict]:
    """The split's rows, {fields..., label, idx}, in `idx` order."""


def _row(text: dict, label, idx) -> dict:
  return {**text, 'label': label, 'idx': int(idx)}


class TfdsSource:
  """GLUE prepared by TFDS in `data_dir` (None: TFDS's default)."""

  def __init__(self, data_dir: Optional[str] = None):
    self.data_dir = os.path.expanduser(data_dir) if data_dir else None

  def _builder(self, config: str):
    return tfds.builder(f'glue/{config}:{glue.TFDS_VERSION}', data_dir=self.data_dir)

  def check(self, config: str, split: str) -> None:
    try:
      self._builder(config).as_dataset(split=split)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
      data_dir = self.data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
      raise DataError(
          f'TFDS dataset glue/{config}:{glue.TFDS_VERSION} is not prepared in {data_dir!r}: '
          f'prepare it with `tfds build glue/{config} --data_dir={data_dir}`, build from '
          f"GLUE's own files with --glue_files=DIR, or leave {config} out of --tasks "
          '(nothing is downloaded).') from None

  def rows(self, config: str, split: str) -> list[dict]:
    columns = COLUMNS[config]
    dataset = self._builder(config).as_dataset(split=split, shuffle_files=False)
    rows = []
    for batch in tfds.as_numpy(dataset.batch(4096)):
      labels = batch['label'].tolist()  # Python ints, or floats from float32 (STS-B)
      for i, idx in enumerate(batch['idx']):
        text = {f: batch[f][i].decode('utf-8') for f in columns.text}
        rows.append(_row(text, labels[i], idx))
    return sorted(rows, key=lambda r: r['idx'])


def _label(columns: Columns, value: Optional[str], where: str):
  """A TSV label as TFDS stores it; None for a row TFDS drops."""
  if not columns.classes:
    if value is None:  # TFDS would keep NaN; no GLUE release has such a row
      raise DataError(f'{where}: no {columns.label}.')
    return float(np.float32(value))  # TFDS stores STS-B's score as float32
  if value in columns.classes:
    return columns.classes.index(value)
  if not value:  # TFDS drops the row (its idx stays taken)
    return None
  try:
    label = int(value)
  except ValueError:
    label = -1
  if not 0 <= label < len(columns.classes):
    raise DataError(f'{where}: {columns.label} {value!r} is not one of {columns.classes} '
                    f'or 0..{len(columns.classes) - 1}.')
  return label


def _tsv_records(path: str, header: bool) -> Iterator[tuple[int, dict, str]]:
  """(TFDS's idx, row, "file:line") per record of a GLUE TSV file."""
  with open(path, encoding='utf-8') as f:  # TFDS's open: UTF-8, universal newlines
    if header:
      reader = csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
      for idx, row in enumerate(reader):
        yield idx, row, f'{path}:{reader.reader.line_num}'
      return
    reader = csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
    for idx, fields in enumerate(reader):  # CoLA: source, label, mark, sentence
      where = f'{path}:{reader.line_num}'
      if len(fields) < 4:
        raise DataError(f'{where}: {len(fields)} columns; CoLA has 4.')
      yield idx, {'is_acceptable': fields[1], 'sentence': fields[3]}, where


def _check_columns(columns: Columns, row: dict, where: str, extra=()) -> None:
  missing = [c for c in [*columns.text.values(), columns.label, *extra] if c not in row]
  if missing:
    raise DataError(f'{where}: no column {missing[0]!r} in the header.')


def read_tsv(path: str, columns: Columns, header: bool = True) -> list[dict]:
  """A GLUE TSV split as TFDS reads it: idx = the record's number, rows with a
  missing field skipped (their idx stays taken)."""
  rows = []
  for idx, row, where in _tsv_records(path, header):
    if idx == 0:
      _check_columns(columns, row, where)
    text = {f: row[c] for f, c in columns.text.items()}
    label = _label(columns, row[columns.label], where)
    if label is not None and None not in text.values():
      rows.append(_row(text, label, idx))
  return rows


def read_mrpc(folder: str, split: str) -> list[dict]:
  """MRPC as TFDS builds it: train and validation are the rows of
  msr_paraphrase_train.txt outside / inside dev_ids.tsv; idx numbers that file."""
  train_path, ids_path = (os.path.join(folder, f) for f in MRPC_FILES)
  with open(ids_path, encoding='utf-8') as f:
    dev_ids = {tuple(r[:2]) for r in csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE)}
  rows, columns = [], COLUMNS['mrpc']
  # utf-8-sig: the file starts with a byte-order mark (TFDS skips its 3 bytes).
  with open(train_path, encoding='utf-8-sig') as f:
    reader = csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
    for idx, row in enumerate(reader):
      where = f'{train_path}:{reader.reader.line_num}'
      if idx == 0:
        _check_columns(columns, row, where, extra=('#1 ID', '#2 ID'))
      if ((row['#1 ID'], row['#2 ID']) in dev_ids) == (split == 'validation'):
        text = {f: row[c] for f, c in columns.text.items()}
        label = _label(columns, row['Quality'], where)
        if label is None or None in text.values():  # TFDS keeps every MRPC row
          raise DataError(f'{where}: a field is missing.')
        rows.append(_row(text, label, idx))
  return rows


class GlueFilesSource:
  """GLUE's own distribution: the directory its download script writes."""

  def __init__(self, root: str):
    self.root = os.path.expanduser(root)

  def _paths(self, config: str, split: str) -> list[str]:
    folder = os.path.join(self.root, COLUMNS[config].folder)
    names = MRPC_FILES if config == 'mrpc' else [TSV_FILES[split]]
    return [os.path.join(folder, n) for n in names]

  def check(self, config: str, split: str) -> None:
    for path in self._paths(config, split):
      if not os.path.isfile(path):
        raise DataError(f"--glue_files: no {path} (GLUE's download script writes it; or "
                        f'leave {config} out of --tasks).')

  def rows(self, config: str, split: str) -> list[dict]:
    paths = self._paths(config, split)
    if config == 'mrpc':
      return read_mrpc(os.path.dirname(paths[0]), split)
    # CoLA's train and dev files are the only ones without a header.
    return read_tsv(paths[0], COLUMNS[config], header=config != 'cola')


def paper1k_ids(path: str = PAPER1K_IDS) -> dict[str, list[int]]:
  """{file stem: the `idx` of the authors' 1k validation sample, in their order}."""
  with open(path) as f:
    return json.load(f)


def select(rows: Sequence[dict], ids: Sequence[int], task: str) -> list[dict]:
  """The rows whose idx is in `ids`, in the order of `ids`; a missing id is an error."""
  by_idx = {r['idx']: r for r in rows}
  missing = [i for i in ids if i not in by_idx]
  if missing:
    raise DataError(f'{task}: paper1k id {missing[0]} is not an idx of its validation split '
                    f'({len(missing)} of {len(ids)} ids missing, {len(rows)} rows read; the ids '
                    "are of GLUE's whole validation split).")
  return [by_idx[i] for i in ids]


def write_jsonl(path: str, rows: Sequence[dict]) -> None:
  """Writes one JSON object a line to `path` through a temporary file, so a
  reader never sees half a file (its `*.jsonl` glob skips the temporary name)."""
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def stems(task_names: Sequence[str]) -> list[str]:
  """File stems of GLUE tasks (`mnli`: its train and both validation files)."""
  unknown = [t for t in task_names if t not in TASKS and t not in FILES]
  if unknown:
    raise errors.ConfigError(
        f'--tasks: unknown GLUE task {unknown[0]!r}; known: {", ".join(TASKS)}.')
  expanded = [s for t in task_names
              for s in ((t, 'mnli_matched', 'mnli_mismatched') if t == 'mnli' else (t,))]
  return list(dict.fromkeys(expanded))


def _plan(task_names, ids) -> list[tuple[str, str, str, str]]:
  """(stem, file split, TFDS config, TFDS split) of every file of `task_names`."""
  plan = []
  for stem in stems(task_names):
    config, splits = FILES[stem]
    plan += [(stem, split, config, tfds_split) for split, tfds_split in splits.items()]
    if stem in ids:
      plan.append((stem, 'paper1k', config, splits['validation']))
  return plan


def build(glue_dir: str, source: Source, task_names: Sequence[str] = TASKS,
          overwrite: bool = False, ids: Optional[dict] = None,
          log: Callable[[str], object] = print) -> dict[str, int]:
  """Writes GLUE_DIR's files of `task_names`; returns {path written: rows}.

  Every source split is checked before anything is written, so a missing one
  fails in seconds rather than after the large ones.
  """
  glue_dir = os.path.expanduser(glue_dir)
  ids = paper1k_ids() if ids is None else ids
  todo = []
  for stem, split, config, tfds_split in _plan(task_names, ids):
    path = os.path.join(glue_dir, f'{stem}.{split}.jsonl')
    if os.path.exists(path) and not overwrite:
      log(f'kept {path} (it exists; --overwrite rebuilds it)')
    else:
      todo.append((path, stem, split, config, tfds_split))
  for config, tfds_split in dict.fromkeys((t[3], t[4]) for t in todo):
    source.check(config, tfds_split)
  os.makedirs(glue_dir, exist_ok=True)
  written = {}
  for (config, tfds_split), group in itertools.groupby(todo, key=lambda t: t[3:]):
    rows = source.rows(config, tfds_split)
    # Samples first: a missing id stops the build before this split's files.
    outputs = [(path, select(rows, ids[stem], stem) if split == 'paper1k' else rows)
               for path, stem, split, _, _ in group]
    for path, out in outputs:
      write_jsonl(path, out)
      written[path] = len(out)
      log(f'wrote {path}: {len(out)} rows')
  return written
