"""How a labelled example becomes its propositions, in tf.data ops.

Each example yields one proposition per candidate label, `<instance> [sep]
<proposition> [cls]`, tokenized and padded to the teacher length, with its
truth, label, task type, template and score (the features `propositions.py`
lists). Batched and parallel: `_BATCH` examples at a time.
"""

import string
from typing import TYPE_CHECKING, Mapping

import seqio
import tensorflow as tf

from freelm_jax.common import errors

if TYPE_CHECKING:  # for annotations only: `propositions` imports this module
  from tasks import propositions


def _format_tf(template: str, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """str.format of a template over string/number features, in TF ops."""
  parts = []
  for literal, field, _, _ in string.Formatter().parse(template):
    if literal:
      parts.append(tf.constant(literal))
    if field is not None:
      value = features[field]
      parts.append(value if value.dtype == tf.string else tf.strings.as_string(value))
  return tf.strings.join(parts) if parts else tf.constant('')


# Examples are turned into propositions in batches of this many: the HF
# tokenizer then runs once per batch (encode_batch), not once per string.
_BATCH = 128


def _label_index_tf(task: 'propositions.TeacherTask', value: tf.Tensor, example_id: tf.Tensor):
  """int32 [B] label indices; a value with no proposition fails naming it."""
  if task.label_thresholds is not None:
    thresholds = tf.constant(task.label_thresholds, tf.float32)
    return tf.reduce_sum(tf.cast(
        tf.cast(value, tf.float32)[:, None] >= thresholds[None, :], tf.int32), axis=1)
  labels = tf.constant(task.labels)
  matches = tf.equal(labels[None, :], tf.cast(value, labels.dtype)[:, None])
  known = tf.reduce_any(matches, axis=1)
  first_bad = tf.argmin(tf.cast(known, tf.int32))
  labels_text = ', '.join(map(repr, task.labels)).replace('{', '(').replace('}', ')')
  message = tf.strings.format(
      f'DataError: task {task.name!r}: label {{}} has no proposition (labels: '
      f'{labels_text}); example {{}} of the split.',
      (value[first_bad], example_id[first_bad]))
  check = tf.debugging.Assert(tf.reduce_all(known), [message])
  with tf.control_dependencies([check]):
    return tf.cast(tf.argmax(tf.cast(matches, tf.int32), axis=1), tf.int32)


def _score_tf(value: tf.Tensor, label_id: tf.Tensor) -> tf.Tensor:
  """The raw label value if numeric, else the label index (float32)."""
  if value.dtype == tf.string:
    return tf.cast(label_id, tf.float32)
  return tf.cast(value, tf.float32)


def _template_draw(task: 'propositions.TeacherTask', example_id: tf.Tensor) -> tf.Tensor:
  """A seeded per-example draw (int64 [B]), the same for every label of an example."""
  keys = tf.strings.join([f'{task.template_seed}:', tf.strings.as_string(example_id)])
  return tf.strings.to_hash_bucket_fast(keys, 2**31 - 1)


def _every_pair(task: 'propositions.TeacherTask') -> list[tuple[int, int]]:
  """(candidate, template) of each proposition of an example, with every template."""
  return [(c, t) for c, templates in enumerate(task.propositions.values())
          for t in range(len(templates))]


def _drawn_template(task: 'propositions.TeacherTask', ex, fill, rows):
  """[B, labels] texts, candidates and template ids: each label's drawn template."""
  draw = _template_draw(task, ex['example_id'])
  texts, templates = [], []
  for label_templates in task.propositions.values():
    options = tf.stack([fill(t) for t in label_templates], axis=1)  # [B, T]
    choice = tf.cast(draw % len(label_templates), tf.int32)
    texts.append(tf.gather(options, choice, batch_dims=1))
    templates.append(choice)
  candidates = tf.tile(tf.range(len(texts), dtype=tf.int32)[None], [rows, 1])
  return tf.stack(texts, axis=1), candidates, tf.stack(templates, axis=1)


def _every_template(task: 'propositions.TeacherTask', ex, fill, rows):
  """[B, pairs] texts, candidates and template ids: every template of every label."""
  del ex
  per_label, pairs = list(task.propositions.values()), _every_pair(task)
  texts = tf.stack([fill(per_label[c][t]) for c, t in pairs], axis=1)
  tiled = lambda ids: tf.tile(tf.constant([ids], tf.int32), [rows, 1])
  return texts, tiled([c for c, _ in pairs]), tiled([t for _, t in pairs])


def _joined_targets(vocabulary: seqio.Vocabulary, instance: tf.RaggedTensor,
                    proposition: tf.RaggedTensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
  """instance [sep] proposition [cls] in at most `length` tokens: [N, length]
  int32 tokens padded with `pad_id`, and [N] lengths. The instance is cut
  first (from its end), then the proposition (the rule of
  `freelm_jax.inference.tokenizer.proposition_lengths`, which the predictor uses).

  Dense ops on purpose: ragged slicing, masking and concatenation build graphs
  of hundreds of ops, and every input worker traces this for every task.
  """
  prop_len = tf.minimum(tf.cast(proposition.row_lengths(), tf.int32), length - 2)
  inst_len = tf.minimum(tf.cast(instance.row_lengths(), tf.int32), length - 2 - prop_len)
  dense = lambda ragged: tf.cast(ragged.to_tensor(0, shape=[None, length]), tf.int32)
  column = tf.range(length)[None, :]
  i, p = inst_len[:, None], prop_len[:, None]
  shifted = tf.gather(dense(proposition), tf.maximum(column - i - 1, 0), batch_dims=1)
  token = lambda value: tf.constant(value, tf.int32)
  tokens = tf.where(column < i, dense(instance), tf.where(
      column == i, token(vocabulary.sep_id), tf.where(
          column <= i + p, shifted, tf.where(
              column == i + p + 1, token(vocabulary.cls_id), token(vocabulary.pad_id)))))
  return tokens, inst_len + prop_len + 2


def to_propositions(task: 'propositions.TeacherTask', vocabulary: seqio.Vocabulary,
                     every_template: bool = False):
  """Preprocessor: each example -> one proposition per candidate label (its
  drawn template), or with `every_template` one per template of every label.

  `targets` = instance [sep] proposition [cls], fitted to the length: when
  too long, the instance is cut first (from its end), then the proposition;
  `[sep]` and `[cls]` are always kept; then padded to the length (`length`
  says how much is real). Works on batches of examples and yields one element
  per example holding its propositions; adds `example_id`, the example's
  position in its (unshuffled) split.
  """
  count = len(_every_pair(task)) if every_template else len(task.propositions)

  def expand(example_id, ex, length):
    ex = dict(ex, example_id=example_id)  # position in the (unshuffled) split
    rows = tf.shape(example_id)[0]
    value = ex[task.label_field]
    label_id = _label_index_tf(task, value, ex['example_id'])
    fill = lambda template: tf.broadcast_to(_format_tf(template, ex), [rows])
    texts, candidate, template = (_every_template if every_template else _drawn_template)(
        task, ex, fill, rows)
    owner = tf.repeat(tf.range(rows), count)  # proposition -> its example
    total = rows * count
    targets, lengths = _joined_targets(
        vocabulary, tf.gather(vocabulary.encode_tf(fill(task.instance)), owner),
        vocabulary.encode_tf(tf.reshape(texts, [-1])), length)
    candidate = tf.reshape(candidate, [-1])
    label = tf.gather(label_id, owner)
    flat = {
        'targets': targets,
        'length': lengths,
        'truth': tf.cast(candidate == label, tf.int32),
        'candidate': candidate,
        'label': label,
        'task_type': tf.fill([total], tf.constant(task.task_type_id, tf.int32)),
        'example_id': tf.gather(ex['example_id'], owner),
        'template': tf.reshape(template, [-1]),
        'score': tf.gather(_score_tf(value, label_id), owner),
    }
    # [examples, propositions, ...]: an example's propositions stay one element.
    return {k: tf.reshape(v, [-1, count, *v.shape[1:]]) for k, v in flat.items()}

  def preprocess(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
    length = sequence_length['targets']
    if length < 3:
      raise errors.ConfigError(f'TEACHER_SEQ_LEN must be at least 3, got {length}.')
    missing = [f for f in task.fields() if f not in dataset.element_spec]
    if missing:
      raise errors.DataError(f'Task {task.name!r}: the source has no field {missing[0]!r}.')
    return dataset.enumerate().batch(_BATCH).map(
        lambda i, ex: expand(i, ex, length), num_parallel_calls=tf.data.AUTOTUNE).unbatch()

  return preprocess
