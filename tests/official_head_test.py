"""The official teacher head (`head_reading = 'official'`) against PyTorch.

The reference is written from FreeLM's released `modeling_freelm.py`, not from
our code: `MultiTaskClassification` computes every head's row and keeps the
one of each example's task id, and `forward_for_mtc` applies a cross-entropy
over that whole row; its README reads P(true) as the softmax of head 0's row,
index 1. Both heads judge every proposition here (tid 0: truth, tid 1: task
type), as `models.TeacherObjective` documents.
"""

import dataclasses
import functools

import flax.linen as nn
import gin
import jax
import numpy as np
import pytest

from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.interop import operative_config
from freelm_jax.core import packing

torch = pytest.importorskip('torch')

CONFIG = network.ModelConfig(vocab_size=64, num_layers=1, d_model=32, num_heads=4,
                             max_len=16, head_labels=(2, 5), head_reading='official')
TASK_TYPE_WEIGHT = 0.7


@functools.lru_cache()
def _params():
  """Random weights, with a head large enough that whole rows and pairs differ."""
  module = network.FreeLM(CONFIG)
  init = jax.jit(functools.partial(module.init, method=network.FreeLM.init_all))
  params = init(jax.random.key(0), np.zeros((1, 8), np.int32))['params']
  params = jax.tree.map(np.asarray, nn.meta.unbox(params))
  head = np.random.default_rng(1).normal(0, 0.5, params['head'].shape).astype(np.float32)
  return dict(params, head=head)


def _batch(seed=0, n=6, length=12) -> dict:
  rng = np.random.default_rng(seed)
  weights = np.ones(n, np.float32)
  weights[-1] = 0  # a padding proposition
  return {'tokens': rng.integers(1, 64, (n, length)).astype(np.int32),
          'lengths': rng.integers(3, length + 1, n).astype(np.int32),
          'truth': rng.integers(0, 2, n).astype(np.int32),
          'task_type': rng.integers(0, 5, n).astype(np.int32), 'weights': weights}


def _hidden_at_cls(batch) -> np.ndarray:
  """The decoder's hidden state at each proposition's [cls] (the head's input)."""
  hidden = jax.jit(network.FreeLM(CONFIG).apply)({'params': _params()}, batch['tokens'])
  return np.asarray(hidden)[np.arange(len(hidden)), batch['lengths'] - 1]


def _mtc_head(hidden, weight, task_ids):
  """`MultiTaskClassification.forward` without bias: each example's own head's row."""
  all_task_logits = torch.einsum('b d, t d n -> b t n', hidden, weight)
  return all_task_logits[torch.arange(0, all_task_logits.shape[0]).long(), task_ids, :]


def _reference(batch):
  """(loss, P(true)) in float64: cross-entropy over whole rows, both heads."""
  hidden = torch.tensor(_hidden_at_cls(batch), dtype=torch.float64)
  weight = torch.tensor(_params()['head'], dtype=torch.float64)
  n = len(hidden)
  truth_logits = _mtc_head(hidden, weight, torch.zeros(n, dtype=torch.long))
  type_logits = _mtc_head(hidden, weight, torch.ones(n, dtype=torch.long))
  weights = torch.tensor(batch['weights'], dtype=torch.float64)
  mean = lambda logits, labels: (torch.nn.functional.cross_entropy(
      logits, torch.tensor(labels, dtype=torch.long), reduction='none') * weights
                                 ).sum() / weights.sum()
  loss = mean(truth_logits, batch['truth']) + TASK_TYPE_WEIGHT * mean(
      type_logits, batch['task_type'])
  return loss.item(), torch.softmax(truth_logits, -1)[:, 1].numpy()


def _loss(batch, config=CONFIG) -> float:
  objective = objectives.TeacherObjective(task_type_weight=TASK_TYPE_WEIGHT)
  loss = jax.jit(lambda params, batch: objective.loss(network.FreeLM(config), params, batch)[0])
  return float(loss(_params(), batch))


def test_official_loss_matches_the_torch_reference_padded_and_packed():
  batch = _batch()
  expected, _ = _reference(batch)
  np.testing.assert_allclose(_loss(batch), expected, atol=1e-5, rtol=0)
  packed, used = packing.pack(batch, rows=4, row_len=CONFIG.max_len, max_per_row=3)
  assert used == len(batch['lengths']) and packed['weights'].sum() == 5
  np.testing.assert_allclose(_loss(packed), expected, atol=1e-5, rtol=0)
  # The project's reading is another loss on the same weights.
  assert abs(_loss(batch, dataclasses.replace(CONFIG, head_reading='project')) - expected) > 1e-2


def test_official_truth_probability_is_head_0s_whole_row():
  batch = _batch(seed=1)
  _, expected = _reference(batch)
  ours = objectives.truth_probability(network.FreeLM(CONFIG), _params(), batch['tokens'],
                                  batch['lengths'])
  np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
  hidden = _hidden_at_cls(batch)  # the project's reading: head 0's first two logits
  pair = np.einsum('bd,dn->bn', hidden.astype(np.float64), _params()['head'][0])[:, :2]
  project = objectives.truth_probability(network.FreeLM(
      dataclasses.replace(CONFIG, head_reading='project')), _params(), batch['tokens'],
                                     batch['lengths'])
  np.testing.assert_allclose(project, 1 / (1 + np.exp(pair[:, 0] - pair[:, 1])), atol=1e-5)
  assert np.abs(np.asarray(project) - expected).max() > 1e-2


def test_teacher_loss_macro_is_recorded_in_the_model_config(tmp_path):
  from freelm_jax.config import settings  # pylint: disable=g-import-not-at-top
  from freelm_jax.training import runner
  gin.clear_config(clear_constants=True)
  try:  # the run layer alone: the model's shape bound here, no data layer
    gin.parse_config_files_and_bindings(['gin/runs/pretrain.gin'], [
        "TEACHER_LOSS = 'official'", "MODEL_DIR = 'unused'", 'TRAIN_STEPS = 1',
        'LEARNING_RATE = 1e-3', 'network.ModelConfig.vocab_size = 64',
        'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
        'network.ModelConfig.num_heads = 4', 'network.ModelConfig.max_len = 16'])
    assert settings.ModelConfig().head_reading == 'official'
    (tmp_path / 'config.gin').write_text(gin.config_str())
  finally:
    gin.clear_config(clear_constants=True)
  assert operative_config.model_config_from_gin(
      str(tmp_path / 'config.gin')).head_reading == 'official'


def test_an_unknown_head_reading_is_one_clear_error():
  with pytest.raises(ValueError, match="head_reading.*'project', 'official'"):
    dataclasses.replace(CONFIG, head_reading='two_logits')
