"""FreeLM's two objectives around the network: language and teacher losses.

An objective is a small object the trainer is handed: it knows how to turn a
batch into a scalar loss plus metrics, and how many tokens a batch holds; its
`stream` names the input stream its batches come from ('lm' or 'teacher'). A
new objective is a new `Objective` (bound into `train_lib.train`'s
`extra_objectives`) plus a schedule that uses it (`schedules.py`), never an
edit of the trainer or loop.

Batches are dicts of arrays:
  language: `tokens`, `targets`, `positions`, `segment_ids`, `weights` [B, T]
    (packed rows; `weights` is 0 on padding).
  teacher: `tokens` [B, T] (right-padded propositions ending in `[cls]`),
    `lengths`, `truth` (0 false / 1 true), `task_type`, `weights` [B];
    or packed (several propositions per row, `packing.py`): `tokens`,
    `positions`, `segment_ids` [B, T] and `cls_index`, `truth`, `task_type`,
    `weights` [B, K] (K propositions per row at most; unused slots weigh 0).
"""

import dataclasses
from typing import Any, Mapping, Protocol

import jax
import jax.numpy as jnp
import optax

from freelm_jax.common import errors
from freelm_jax.core import network

Array = jax.Array
Batch = Mapping[str, Array]
TRUTH_HEAD = 0
TASK_TYPE_HEAD = 1


class Objective(Protocol):
  """What the trainer needs of an objective."""

  name: str  # the key schedules use
  stream: str  # the input stream of its batches: 'lm' or 'teacher'

  def loss(self, module: network.FreeLM, params: Any,
           batch: Batch) -> tuple[Array, dict[str, Array]]:
    """Returns (scalar loss to minimise, metrics)."""

  def num_tokens(self, batch: Batch) -> Array:
    """Tokens in the batch that the step processes (for tokens/s)."""


def _weighted_mean(values: Array, weights: Array) -> Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@dataclasses.dataclass(frozen=True)
class LanguageObjective:
  """Next-token cross-entropy; padding and packed-segment boundaries masked.

  With `logits_chunk` > 0 the loss runs over chunks of that many positions
  (it must divide the sequence length), each rematerialised in the backward
  pass: only one chunk's [B, chunk, V] logits exist at a time, instead of the
  whole batch's (in the compute dtype plus a float32 copy). A batch without
  `segment_ids` is one segment per row.
  """

  logits_chunk: int = 0
  name: str = 'lm'
  stream: str = 'lm'

  def __post_init__(self):
    errors.check_count(LanguageObjective, 'logits_chunk', self.logits_chunk, 0,
                       ' (0: the whole sequence at once)')

  def loss(self, module, params, batch):
    hidden_BTD = module.apply({'params': params}, batch['tokens'], batch['positions'],
                              batch.get('segment_ids'))
    weights_BT = batch['weights'].astype(jnp.float32)
    losses_BT, correct_BT = _lm_losses(
        module, params, hidden_BTD, batch['targets'], self.logits_chunk)
    loss = _weighted_mean(losses_BT, weights_BT)
    return loss, {'loss': loss,
                  'accuracy': _weighted_mean(correct_BT, weights_BT)}

  def num_tokens(self, batch):
    return jnp.sum(batch['weights'])


def _token_losses(module, params, hidden_BTD, targets_BT) -> tuple[Array, Array]:
  """Per-token cross-entropy and correctness; log-softmax in float32."""
  logits_BTV = module.apply({'params': params}, hidden_BTD,
                            method=network.FreeLM.lm_logits).astype(jnp.float32)
  losses_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
  return losses_BT, jnp.argmax(logits_BTV, -1) == targets_BT


def _lm_losses(module, params, hidden_BTD, targets_BT, chunk: int) -> tuple[Array, Array]:
  """`_token_losses` whole, or scanned over rematerialised sequence chunks."""
  B, T, D = hidden_BTD.shape
  if not chunk or chunk >= T:
    return _token_losses(module, params, hidden_BTD, targets_BT)
  if T % chunk:
    raise errors.ConfigError(f'LanguageObjective.logits_chunk={chunk} must divide the '
                             f'sequence length {T}')
  n = T // chunk
  hidden_NBCD = hidden_BTD.reshape(B, n, chunk, D).swapaxes(0, 1)
  targets_NBC = targets_BT.reshape(B, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_losses(params, hidden_BCD, targets_BC):
    return _token_losses(module, params, hidden_BCD, targets_BC)

  _, (losses_NBC, correct_NBC) = jax.lax.scan(
      lambda carry, xs: (carry, chunk_losses(params, *xs)), None,
      (hidden_NBCD, targets_NBC))
  return (losses_NBC.swapaxes(0, 1).reshape(B, T),
          correct_NBC.swapaxes(0, 1).reshape(B, T))


def _cls_forward(module: network.FreeLM, tokens, lengths):
  """Head logits at each row's `[cls]` (its last non-padding token)."""
  hidden_BTD = module(tokens)
  cls_index_B = jnp.maximum(lengths - 1, 0)
  hidden_BD = jnp.take_along_axis(
      hidden_BTD, cls_index_B[:, None, None], axis=1)[:, 0]
  return module.head_logits(hidden_BD)


def _packed_cls_forward(module: network.FreeLM, tokens, positions, segment_ids,
                        cls_index):
  """Head logits at every packed proposition's `[cls]`, [B, K, heads, L]."""
  hidden_BTD = module(tokens, positions, segment_ids)
  hidden_BKD = jnp.take_along_axis(hidden_BTD, cls_index[:, :, None], axis=1)
  B, K, D = hidden_BKD.shape
  return module.head_logits(hidden_BKD.reshape(B * K, D)).reshape(B, K, *_tail(module))


def _tail(module) -> tuple:
  return (len(module.config.head_labels), module.config.max_labels)


def head_logits_at_cls(module, params, tokens, lengths) -> Array:
  """float32 logits of every head at `[cls]`, [B, heads, max_labels]."""
  logits = module.apply({'params': params}, tokens, lengths, method=_cls_forward)
  return logits.astype(jnp.float32)


def truth_probability(module, params, tokens, lengths) -> Array:
  """P(true) per proposition, as the model's `head_reading` reads it."""
  logits = head_logits_at_cls(module, params, tokens, lengths)
  return jax.nn.softmax(truth_logits(logits, module.config), axis=-1)[:, 1]


def truth_logits(logits: Array, config: network.ModelConfig) -> Array:
  """The truth judgement's logits of head logits [N, heads, L].

  'official': head 0's whole row (index 1 = true), as FreeLM's README reads
  it; 'project': its first two logits.
  """
  if config.head_reading == 'official':
    return logits[:, TRUTH_HEAD]
  return logits[:, TRUTH_HEAD, :2]


def task_type_logits(logits: Array, config: network.ModelConfig) -> Array:
  """The task-type judgement's logits: 'official', the head's whole row;
  'project', its first `head_labels[1]` logits (the rest -inf)."""
  if config.head_reading == 'official':
    return logits[:, TASK_TYPE_HEAD]
  return _masked_logits(logits[:, TASK_TYPE_HEAD], config.head_labels[TASK_TYPE_HEAD])


def _masked_logits(logits: Array, num_labels: int) -> Array:
  """Keeps the first `num_labels` logits of a head; the rest get -inf."""
  valid = jnp.arange(logits.shape[-1]) < num_labels
  return jnp.where(valid, logits, -jnp.inf)


def _teacher_logits(module, params, batch) -> tuple[Array, Batch]:
  """float32 head logits at every proposition's `[cls]`, [N, heads, L], and
  its `truth`, `task_type`, `weights` [N]; a packed batch's N is B * K."""
  if 'cls_index' not in batch:
    return head_logits_at_cls(module, params, batch['tokens'], batch['lengths']), batch
  logits = module.apply({'params': params}, batch['tokens'], batch['positions'],
                        batch['segment_ids'], batch['cls_index'],
                        method=_packed_cls_forward).astype(jnp.float32)
  labels = {k: batch[k].reshape(-1) for k in ('truth', 'task_type', 'weights')}
  return logits.reshape(-1, *logits.shape[2:]), labels


@dataclasses.dataclass(frozen=True)
class TeacherObjective:
  """Truth cross-entropy plus `task_type_weight` x the task-type cross-entropy.

  Both are read at each proposition's `[cls]` as the model's
  `ModelConfig.head_reading` says, so training and every later P(true)
  agree. 'project': the truth head's first two logits and the task-type
  head's own labels. 'official': the loss of FreeLM's released code
  (`FreeLMModel.forward_for_mtc`), a cross-entropy over a head's whole
  max_labels row, no masking. That code scores one head per example, picked
  by the example's task id `tid`; it does not include how `tid` is assigned
  (the release is the model only), so here both heads judge every
  proposition, as in the 'project' reading.
  """

  task_type_weight: float = 0.5
  name: str = 'teacher'
  stream: str = 'teacher'

  def loss(self, module, params, batch):
    logits, labels = _teacher_logits(module, params, batch)
    truth_NL = truth_logits(logits, module.config)
    weights = labels['weights'].astype(jnp.float32)
    truth_loss = _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(
        truth_NL, labels['truth']), weights)
    type_loss = _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(
        task_type_logits(logits, module.config), labels['task_type']), weights)
    loss = truth_loss + self.task_type_weight * type_loss
    accuracy = _weighted_mean(jnp.argmax(truth_NL, -1) == labels['truth'], weights)
    return loss, {'loss': loss, 'truth_loss': truth_loss,
                  'task_type_loss': type_loss, 'accuracy': accuracy}

  def num_tokens(self, batch):
    if 'cls_index' in batch:
      return jnp.sum(batch['segment_ids'] > 0)
    return jnp.sum(batch['lengths'] * batch['weights'])
