"""Proposition building, `tasks.register` validation and the two streams."""

import gzip
import json
import sys
import uuid

import numpy as np
import pytest
import seqio
import tensorflow as tf

import tasks
from freelm_jax.data import input_pipeline
from freelm_jax.data import prefetch
from freelm_jax.inference import tokenizer
from tasks import vocabulary

VOCAB = vocabulary.demo_vocabulary()
NLI = {0: 'Here, "{sentence2}" follows from the text.',
       1: 'Here, "{sentence2}" is unrelated to the text.',
       2: 'Here, "{sentence2}" contradicts the text.'}


def _write_jsonl(path, rows, gz=False):
  opener = gzip.open if gz else open
  with opener(path, 'wt') as f:
    for row in rows:
      f.write(row if isinstance(row, str) else json.dumps(row))
      f.write('\n')
  return str(path)


def _register(path, **kwargs):
  name = f'test_{uuid.uuid4().hex[:8]}'
  spec = dict(source={'validation': path}, instance='{sentence1}',
              propositions=NLI, label_field='label', task_type='test_nli')
  spec.update(kwargs)
  tasks.register(name, **spec)
  return name


def _propositions(name, seq_len=64):
  ds = input_pipeline.teacher_dataset(name, seq_len, 'validation', shuffle=False,
                                      seed=None, num_epochs=1)
  return list(ds.as_numpy_iterator())  # read to the end: no iterator left in flight


ROWS = [{'sentence1': 'A man plays a guitar.', 'sentence2': 'A man plays music.', 'label': 0},
        {'sentence1': 'Two dogs run.', 'sentence2': 'The cats sleep.', 'label': 2},
        {'sentence1': 'It rains.', 'sentence2': 'Pigs can fly.', 'label': 1}]


def test_each_example_yields_one_proposition_per_label_exactly_one_true(tmp_path):
  name = _register(_write_jsonl(tmp_path / 'nli.jsonl', ROWS))
  props = _propositions(name)
  assert len(props) == 3 * len(ROWS)
  for i, row in enumerate(ROWS):
    group = [p for p in props if p['example_id'] == i]
    assert [p['candidate'] for p in group] == [0, 1, 2]
    assert [p['truth'] for p in group] == [int(c == row['label']) for c in range(3)]
    for p in group:
      text = VOCAB.decode(p['tokens'][:p['lengths']].tolist())
      expected = row['sentence1'] + '[sep]' + NLI[p['candidate']].format(**row) + '[cls]'
      assert text == expected
      assert p['tokens'][p['lengths'] - 1] == VOCAB.cls_id
      assert p['task_type'] == tasks.task_types().index('test_nli')


def test_shuffling_moves_examples_and_keeps_their_propositions_together(tmp_path):
  rows = [dict(ROWS[i % 3], sentence1=f'Example number {i}.') for i in range(60)]
  name = _register(_write_jsonl(tmp_path / 'nli.jsonl', rows), shuffle_buffer_size=100)
  ds = input_pipeline.teacher_dataset(name, 32, 'validation', shuffle=True, seed=7,
                                      num_epochs=1, batch_size=6)
  ids = np.concatenate([b['example_id'] for b in ds.as_numpy_iterator()])
  groups = ids.reshape(-1, 3)  # one row of three propositions per example
  assert (groups == groups[:, :1]).all()
  assert sorted(groups[:, 0]) == list(range(60))
  assert list(groups[:, 0]) != list(range(60))


def test_truncation_keeps_sep_proposition_and_cls(tmp_path):
  long = {'sentence1': 'word ' * 200, 'sentence2': 'short', 'label': 1}
  name = _register(_write_jsonl(tmp_path / 'long.jsonl.gz', [long], gz=True))
  for p in _propositions(name, seq_len=24):
    tokens = p['tokens'][:p['lengths']].tolist()
    assert len(tokens) == 24
    assert tokens[-1] == VOCAB.cls_id and VOCAB.sep_id in tokens
    proposition = VOCAB.encode(NLI[p['candidate']].format(**long))
    assert tokens[-1 - len(proposition):-1] == proposition


def test_cutting_follows_the_rule_the_predictor_uses(tmp_path):
  sizes = [(1, 1), (3, 12), (12, 3), (30, 30)]
  rows = [{'sentence1': 'word ' * n, 'sentence2': 'pig ' * m, 'label': 0} for n, m in sizes]
  name = _register(_write_jsonl(tmp_path / 'sizes.jsonl', rows))
  propositions = _propositions(name, seq_len=16)
  assert {int(p['example_id']) for p in propositions} == set(range(len(rows)))
  for p in propositions:
    row = rows[int(p['example_id'])]
    instance = VOCAB.encode(row['sentence1'])
    proposition = VOCAB.encode(NLI[p['candidate']].format(**row))
    keep_instance, keep_proposition = tokenizer.proposition_lengths(
        len(instance), len(proposition), 16)
    expected = (instance[:keep_instance] + [VOCAB.sep_id] + proposition[:keep_proposition]
                + [VOCAB.cls_id])
    assert p['tokens'][:p['lengths']].tolist() == expected


def test_string_labels_and_number_fields(tmp_path):
  rows = [{'q': 'Is it 3?', 'n': 3, 'answer': 'yes'}]
  name = _register(_write_jsonl(tmp_path / 'qa.jsonl', rows), instance='{q}',
                   propositions={'yes': 'The number is {n}.', 'no': 'It is not {n}.'},
                   label_field='answer')
  props = _propositions(name)
  assert [p['truth'] for p in props] == [1, 0]
  assert VOCAB.decode(props[0]['tokens'][:props[0]['lengths']].tolist()).endswith(
      'The number is 3.[cls]')


@pytest.mark.parametrize('template, message', [
    ('Here {0} holds.', 'plain'), ('Value {x:.2f}.', 'plain'), ('{a.b}', 'plain')])
def test_register_rejects_templates_tf_cannot_format(tmp_path, template, message):
  with pytest.raises(ValueError, match=message):
    _register(str(tmp_path / 'x.jsonl'), propositions={0: template, 1: 'ok'})


def test_register_rejects_mixed_label_types(tmp_path):
  with pytest.raises(ValueError, match='must all be int or all str'):
    _register(str(tmp_path / 'x.jsonl'), propositions={0: 'a', '1': 'b'})


def _error_of(name):
  """The one-line error a pipeline worker reports for a task."""
  iterator = prefetch.ProcessIterator(
      'freelm_jax.data.input_pipeline.eval_batches',
      dict(names=[name], seq_len=32, batch_size=4, split='validation'),
      setup=prefetch.WorkerSetup())
  with pytest.raises(prefetch.PipelineError) as error:
    list(iterator)
  return str(error.value)


def test_bad_rows_name_file_line_task_and_field(tmp_path):
  path = _write_jsonl(tmp_path / 'bad.jsonl', [ROWS[0], '{"sentence1": "x", oops}'])
  info = tasks.get_teacher_task(_register(path))
  with pytest.raises(tasks.DataError, match=rf'{path}:2: malformed JSON'):
    list(info.examples('validation'))

  missing = _write_jsonl(tmp_path / 'missing.jsonl', [{'sentence1': 'x', 'label': 0}])
  info = tasks.get_teacher_task(_register(missing))
  with pytest.raises(tasks.DataError, match=rf"{missing}:1: task '{info.name}': example has no field 'sentence2'"):
    list(info.examples('validation'))

  unknown = _write_jsonl(tmp_path / 'label.jsonl', [dict(ROWS[0], label=7)])
  info = tasks.get_teacher_task(_register(unknown))
  with pytest.raises(tasks.DataError, match=rf"{unknown}:1: task '{info.name}': label 7 has no proposition"):
    list(info.examples('validation'))


def test_unknown_task_lists_registered_ones():
  with pytest.raises(ValueError, match='Unknown teacher task .nope.; registered: .*opinions_movie_sentiment'):
    tasks.get_teacher_task('nope')


def test_pipeline_errors_from_a_worker_arrive_as_one_line():
  message = _error_of('opinions_does_not_exist')
  assert 'opinions_does_not_exist' in message and '\n' not in message


def test_language_stream_packs_documents_with_eos_boundaries():
  with prefetch.ProcessIterator(
      'freelm_jax.data.input_pipeline.lm_batches',
      dict(name='opinions_lm', seq_len=128, batch_size=4, seed=0)) as stream:
    batch = next(stream)
  assert batch['tokens'].shape == (4, 128)
  segments, tokens, targets = batch['segment_ids'], batch['tokens'], batch['targets']
  starts = (batch['positions'] == 0) & (segments > 0)
  assert np.all(tokens[starts] == VOCAB.eos_id)  # GPT-2 style BOS per document
  inside = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
  np.testing.assert_array_equal(tokens[:, 1:][inside], targets[:, :-1][inside])
  assert np.all(batch['weights'][segments == 0] == 0)
  assert (segments.max(axis=1) > 1).any()  # rows hold several documents


def test_demo_data_is_registered_with_a_held_out_type():
  assert set(tasks.opinions.HELD_OUT_TASKS).isdisjoint(tasks.opinions.TRAINED_TASKS)
  mixture = seqio.get_mixture_or_task(tasks.opinions.TEACHER_MIXTURE)
  assert sorted(t.name for t in mixture.tasks) == sorted(tasks.opinions.TRAINED_TASKS)
  assert VOCAB.pad_id == 0 and VOCAB.vocab_size == 8192


def test_a_users_map_function_is_still_converted_by_autograph():
  # `import tasks` leaves AutoGraph off for seqio's and this project's code only.
  def shrink(x):  # Python control flow on a tensor: needs AutoGraph
    if x > 2:
      return x - 2
    return x

  assert 'tasks' in sys.modules
  assert list(tf.data.Dataset.range(5).map(shrink).as_numpy_iterator()) == [0, 1, 2, 1, 2]


def test_packed_teacher_rows_hold_the_streams_propositions_in_order():
  kwargs = dict(name='opinions_teacher', seq_len=48, seed=3)
  unpacked = next(input_pipeline.teacher_batches(batch_size=96, **kwargs))
  packed = next(input_pipeline.teacher_batches(batch_size=8, pack_len=96, **kwargs))
  assert packed['tokens'].shape == (8, 96) and packed['cls_index'].shape == (8, 32)
  propositions = []  # (tokens, truth, task_type) of each packed segment, row by row
  for row in range(8):
    segments = packed['segment_ids'][row]
    for slot in np.flatnonzero(packed['weights'][row]):
      span = np.flatnonzero(segments == slot + 1)
      assert packed['cls_index'][row, slot] == span[-1]  # [cls] ends its segment
      np.testing.assert_array_equal(packed['positions'][row, span], np.arange(len(span)))
      propositions.append((packed['tokens'][row, span].tolist(),
                           packed['truth'][row, slot], packed['task_type'][row, slot]))
  assert len(propositions) > 8 * 96 // 48  # several propositions per row
  for i, (tokens, truth, task_type) in enumerate(propositions):
    length = unpacked['lengths'][i]
    assert tokens == unpacked['tokens'][i, :length].tolist()
    assert (truth, task_type) == (unpacked['truth'][i], unpacked['task_type'][i])
  assert set(packed['tokens'][packed['segment_ids'] == 0]) <= {VOCAB.pad_id}
