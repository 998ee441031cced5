"""Zero-shot scoring with the drawn template or averaged over every template; a
stop request ends an evaluation between two batches."""

import json
import types
import uuid

import numpy as np
import pytest

import tasks
from freelm_jax.common import errors
from freelm_jax.data import input_pipeline
from freelm_jax.training import evaluation
from tasks import vocabulary

VOCAB = vocabulary.demo_vocabulary()
# P(true) of each template's proposition, read from its text by the fake model.
P_TRUE = {'Alpha': 0.9, 'Beta': 0.0, 'Gamma': 0.5, 'Delta': 0.5, 'Epsilon': 0.5}


def _register(tmp_path, rows=12):
  path = tmp_path / 'x.jsonl'
  path.write_text(''.join(json.dumps({'s': f'row {i}', 'label': i % 2}) + '\n'
                          for i in range(rows)))
  name = f'eval_{uuid.uuid4().hex[:8]}'
  tasks.register(name, {'validation': str(path)}, '{s}',
                 {0: ['Alpha.', 'Beta.'], 1: ['Gamma.', 'Delta.', 'Epsilon.']},
                 task_type='eval_test')
  return name


def _score(tokens, lengths):
  texts = [VOCAB.decode(t[:n].tolist()) for t, n in zip(tokens, lengths)]
  return np.array([next((p for w, p in P_TRUE.items() if f'{w}.' in text), 0.0)
                   for text in texts])


def _predict(name, every_template):
  batches = list(input_pipeline.eval_batches([name], 32, 8, 'validation',
                                             every_template=every_template))
  return evaluation.predict(_score, batches)[name], batches


def test_every_template_of_every_label_is_scored_once(tmp_path):
  name = _register(tmp_path)
  _, batches = _predict(name, every_template=True)
  rows = [(int(b['example_id'][i]), int(b['candidate'][i]), int(b['template'][i]),
           VOCAB.decode(b['tokens'][i][:b['lengths'][i]].tolist()))
          for _, b in batches for i in np.flatnonzero(b['weights'])]
  pairs = [(0, 0, 'Alpha.'), (0, 1, 'Beta.'), (1, 0, 'Gamma.'), (1, 1, 'Delta.'),
           (1, 2, 'Epsilon.')]
  for example in range(12):
    got = sorted((c, t, text.split('[sep]')[1].removesuffix('[cls]'))
                 for e, c, t, text in rows if e == example)
    assert got == pairs


def test_average_differs_from_drawn_where_the_templates_disagree(tmp_path):
  name = _register(tmp_path)
  drawn, batches = _predict(name, every_template=False)
  templates = {int(b['example_id'][i]): int(b['template'][i])
               for _, b in batches for i in np.flatnonzero(b['weights'])
               if b['candidate'][i] == 0}
  # Drawn: label 0's P(true) is 0.9 (Alpha) or 0.0 (Beta) against label 1's 0.5.
  assert drawn['predicted'] == [0 if templates[e] == 0 else 1 for e in range(12)]
  assert set(templates.values()) == {0, 1}  # both draws occur, so both outcomes
  # Average: label 0 = mean(0.9, 0.0) = 0.45 < label 1 = 0.5 for every example.
  average, _ = _predict(name, every_template=True)
  assert average['predicted'] == [1] * 12
  np.testing.assert_allclose(average['p_true'], [[0.45, 0.5]] * 12)
  assert average['labels'] == drawn['labels'] == [i % 2 for i in range(12)]


def test_an_unknown_templates_option_is_an_error():
  with pytest.raises(ValueError, match="templates = 'best'"):
    evaluation.evaluate(None, [], 'validation', 32, 8, [], templates='best')


def test_gin_selects_the_templates_option():
  import gin  # pylint: disable=g-import-not-at-top
  with gin.unlock_config():
    gin.parse_config("evaluation.evaluate.templates = 'best'")
  try:
    with pytest.raises(ValueError, match="templates = 'best'"):
      evaluation.evaluate(None, [], 'validation', 32, 8, [])
  finally:
    gin.clear_config()


def test_a_stop_request_ends_the_scoring_between_two_batches(tmp_path):
  name = _register(tmp_path)
  batches = list(input_pipeline.eval_batches([name], 32, 8, 'validation'))
  scored = []
  score = lambda tokens, lengths: scored.append(len(tokens)) or _score(tokens, lengths)
  with pytest.raises(errors.Interrupted):
    evaluation.predict(score, evaluation.until_stopped(batches, lambda: bool(scored)))
  assert len(scored) == 1 < len(batches)


def test_a_stop_request_ends_the_held_out_lm_loss_after_its_batch():
  data = types.SimpleNamespace(lm_task='opinions_lm', lm_seq_len=32, lm_batch_size=4,
                               eval_split='validation', lm_eval_batches=3)
  losses = []
  trainer = types.SimpleNamespace(
      eval_loss=lambda params, batch, objective: losses.append(1.0) or (1.0, 10.0))
  with pytest.raises(errors.Interrupted):
    evaluation.run_lm_eval(trainer, None, data, stop=lambda: bool(losses))
  assert losses == [1.0]
  assert evaluation.run_lm_eval(trainer, None, data)['num_tokens'] == 30  # no stop: all 3


def test_a_stop_request_before_the_evaluation_writes_no_rows():
  data = types.SimpleNamespace(lm_task='opinions_lm', lm_seq_len=32, lm_batch_size=4,
                               eval_split='validation', lm_eval_batches=3,
                               eval_tasks=['opinions_party'])
  rows = []
  writer = types.SimpleNamespace(write=rows.append)
  with pytest.raises(errors.Interrupted):
    evaluation.run_eval(None, None, data, 4, [], writer, stop=lambda: True)
  assert rows == []
