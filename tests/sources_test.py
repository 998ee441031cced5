"""JSONL sources read by tf.data (file:line errors, snapshots) and the block-drawn mixture sampler."""

import gzip
import json
import uuid

import numpy as np
import pytest
import tensorflow as tf

import tasks
from freelm_jax.data import input_pipeline
from tasks import sources


def _write(path, lines, gz=False):
  with (gzip.open if gz else open)(path, 'wt') as f:
    f.writelines(line + '\n' for line in lines)
  return str(path)


def test_jsonl_source_reads_files_in_order_with_file_line_and_row_index(tmp_path):
  plain = _write(tmp_path / 'a.jsonl', ['{"text": "héllo"}', '', '  ', '{"text": "b"}'])
  packed = _write(tmp_path / 'b.jsonl.gz', ['{"text": "c"}'], gz=True)
  signature = {'text': tf.TensorSpec([], tf.string), 'where': tf.TensorSpec([], tf.string),
               'index': tf.TensorSpec([], tf.int64)}
  source = sources.jsonl_source({'train': [plain, packed]}, signature,
                                lambda row, where, index: dict(row, where=where, index=index))
  rows = list(source.get_dataset('train').as_numpy_iterator())
  assert [r['text'].decode() for r in rows] == ['héllo', 'b', 'c']
  assert [r['where'].decode() for r in rows] == [f'{plain}:1', f'{plain}:4', f'{packed}:1']
  assert [r['index'] for r in rows] == [0, 1, 2]
  assert source.num_input_examples('train') == 3


def _register(path, **kwargs):
  name = f'src_{uuid.uuid4().hex[:8]}'
  tasks.register(name, {'train': path}, '{s}', {0: '{s} is even.', 1: '{s} is odd.'},
                 task_type='src_parity', **kwargs)
  return name


def test_a_malformed_line_in_the_pipeline_names_file_and_line(tmp_path):
  path = _write(tmp_path / 'bad.jsonl', ['{"s": "a", "label": 0}', 'not json'])
  with pytest.raises(Exception) as error:
    list(input_pipeline.teacher_dataset(_register(path), 16, 'train', False, None, 1))
  assert sources.explain(error.value) == f'{path}:2: malformed JSON (Expecting value).'


def test_a_jsonl_teacher_stream_resumes_from_an_iterator_snapshot(tmp_path):
  rows = [json.dumps({'s': f'w{i}', 'label': i % 2}) for i in range(40)]
  name = _register(_write(tmp_path / 'rows.jsonl', rows), shuffle_buffer_size=16)
  stream = lambda skip: input_pipeline.teacher_batches(
      name, 16, 4, seed=3, split='train', skip_batches=skip,
      state_dir=str(tmp_path / 'snapshots'), snapshot_every=3)
  straight = [b['tokens'] for _, b in zip(range(5), stream(0))]
  snapshots = list((tmp_path / 'snapshots').glob('*.done'))
  assert snapshots  # JSONL iterators can be checkpointed now (no re-reading)
  resumed = next(stream(4))['tokens']  # restores the snapshot at 3, reads 1
  np.testing.assert_array_equal(resumed, straight[4])


def test_sample_from_datasets_draws_by_weight_and_restores(tmp_path):
  constants = [tf.data.Dataset.from_tensors(np.int64(i)).repeat() for i in range(4)]
  mixed = sources.sample_from_datasets(constants, [1.0, 2.0, 0.0, 1.0], seed=7)
  draws = np.array(list(mixed.take(8000).as_numpy_iterator()))
  shares = np.bincount(draws, minlength=4) / len(draws)
  np.testing.assert_allclose(shares, [0.25, 0.5, 0.0, 0.25], atol=0.02)

  iterator = iter(mixed)
  for _ in range(1500):  # across a block boundary
    next(iterator)
  checkpoint = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / 'ckpt'))
  expected = [int(next(iterator)) for _ in range(700)]
  restored = iter(mixed)
  tf.train.Checkpoint(iterator=restored).read(checkpoint).assert_consumed()
  assert [int(next(restored)) for _ in range(700)] == expected


def test_sample_from_datasets_stops_when_a_drawn_dataset_is_empty():
  mixed = sources.sample_from_datasets(
      [tf.data.Dataset.range(3), tf.data.Dataset.range(100, 1000)], [1.0, 1.0], seed=0)
  draws = list(mixed.as_numpy_iterator())
  assert sorted(d for d in draws if d < 3) == [0, 1, 2] and len(draws) < 900
