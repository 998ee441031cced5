"""Teacher tasks in FreeLM's unified proposition format.

Each labelled example yields one proposition per candidate label,

    <instance> [sep] <proposition> [cls]

and exactly the one for the example's own label is true. `register` turns a
source plus str.format templates into a seqio Task whose elements are
labelled examples, each holding its P propositions (one per label) with the
features below, each with a leading axis of size P. Shuffling thus moves
examples, not propositions: the input pipeline unbatches them afterwards, so an
example's true and false propositions meet in the same training batch (the truth
is an interaction of instance and proposition; seen apart, they teach far less).

    targets     int32 [L]  instance tokens, [sep], proposition tokens, [cls],
                           padded with the vocabulary's [pad] to the sequence
                           length L (fixed-size rows: tf.data moves them
                           cheaply, no per-element padding later)
    length      int32      how many of them are not padding
    truth       int32      1 if this proposition is the true one
    task_type   int32      id of the task type (for the task-aware head)
    candidate   int32      index of this proposition's label among the labels
    label       int32      index of the example's true label
    example_id  int64      position of the example in its split
    template    int32      which of the label's templates was used
    score       float32    the raw label value if numeric (e.g. STS-B's 0-5
                           similarity), else the label index

A label may have several templates; one is chosen per example by a seeded
draw (`template_seed`), the same index for every label of that example.
A numeric label field can be binned (`label_thresholds`, e.g. STS-B).
Templates are compiled to TensorFlow string ops, so any seqio source works;
JSONL sources additionally check every row and name file:line on errors.
"""

import collections
import dataclasses
import functools
import json
import string
from typing import Iterator, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from freelm_jax import errors
from tasks import sources
from tasks import vocabulary as vocabulary_lib

Label = Union[int, str]
Templates = Union[str, Sequence[str]]
_TEACHER_TASKS: dict[str, 'TeacherTask'] = {}
_TASK_TYPES: list[str] = []


@dataclasses.dataclass(frozen=True)
class TeacherTask:
  """What evaluation and baselines need to know about a registered task."""

  name: str
  instance: str
  propositions: Mapping[Label, tuple[str, ...]]  # label -> its templates
  label_field: str
  task_type: str
  split_paths: Optional[Mapping[str, object]]  # None unless the source is JSONL.
  label_thresholds: Optional[tuple[float, ...]] = None
  metrics: tuple[str, ...] = ('accuracy',)
  template_seed: int = 0

  @property
  def labels(self) -> tuple:
    return tuple(self.propositions)

  @property
  def task_type_id(self) -> int:
    return _TASK_TYPES.index(self.task_type)

  def fields(self) -> list[str]:
    """Every field a row needs: template fields plus the label field."""
    return list(self._fields)

  @functools.cached_property
  def _fields(self) -> tuple[str, ...]:
    names = template_fields(self.instance, self.name)
    for templates in self.propositions.values():
      for template in templates:
        names += template_fields(template, self.name)
    return tuple(dict.fromkeys(names + [self.label_field]))

  def check_row(self, row: dict, where: str) -> None:
    """Raises DataError naming task, field/label and the row."""
    for field in self._fields:
      if field not in row:
        raise sources.DataError(
            f'{where}: task {self.name!r}: example has no field {field!r} '
            f'(fields: {", ".join(sorted(row))}).')
    value = row[self.label_field]
    if self.label_thresholds is not None:
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise sources.DataError(
            f'{where}: task {self.name!r}: label {value!r} is not a number.')
    elif value not in self.propositions:
      raise sources.DataError(
          f'{where}: task {self.name!r}: label {value!r} has no '
          f'proposition (labels: {", ".join(map(repr, self.labels))}).')

  def label_index(self, value) -> int:
    """Index of a raw label value among the labels (binned if thresholded)."""
    if self.label_thresholds is not None:
      return sum(value >= t for t in self.label_thresholds)
    return self.labels.index(value)

  def examples(self, split: str) -> Iterator[tuple[str, list[str], int]]:
    """(instance text, per-candidate target texts, true index) of a JSONL split.

    A candidate's target is the text its template adds beyond the instance
    (its own fields' values), or the whole proposition if it has none (the
    first template of each label). Used by the no-model shortcut baseline.
    """
    instance_fields = set(template_fields(self.instance, self.name))
    paths = sources.expand_paths(self.split_paths[split])
    for where, row in sources.read_jsonl(paths):
      self.check_row(row, where)
      targets = []
      for template, *_ in self.propositions.values():
        own = [f for f in template_fields(template, self.name) if f not in instance_fields]
        targets.append(' '.join(str(row[f]) for f in own) if own
                       else template.format(**row))
      yield (self.instance.format(**row), targets,
             self.label_index(row[self.label_field]))


def template_fields(template: str, task: str) -> list[str]:
  """Names of the `{field}`s of a template; rejects what TF cannot format."""
  names = []
  for _, field, spec, conversion in string.Formatter().parse(template):
    if field is None:
      continue
    if not field.isidentifier() or spec or conversion:
      raise errors.ConfigError(
          f'Task {task!r}: template {template!r} field {{{field}}} must be a plain '
          f'{{name}} (no index, attribute, format spec or conversion).')
    names.append(field)
  return names


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


def task_types() -> tuple[str, ...]:
  """Registered task types in id order (ids are registration order)."""
  return tuple(_TASK_TYPES)


def declare_task_type(task_type: str) -> int:
  """Gives a task type an id (if it has none yet); returns the id."""
  if task_type not in _TASK_TYPES:
    _TASK_TYPES.append(task_type)
  return _TASK_TYPES.index(task_type)


def get(name: str) -> TeacherTask:
  """The registered teacher task; unknown names list the registered ones."""
  if name not in _TEACHER_TASKS:
    raise errors.ConfigError(f'Unknown teacher task {name!r}; registered: '
                             f'{", ".join(sorted(_TEACHER_TASKS)) or "none"}.')
  return _TEACHER_TASKS[name]


def provider(name: str) -> seqio.DatasetProviderBase:
  """The registered seqio task or mixture `name`; an unknown name is a ConfigError."""
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    raise errors.ConfigError(f'No task or mixture {name!r} is registered.')
  return seqio.get_mixture_or_task(name)


def mixture_tasks(name: str) -> list[str]:
  """The names of the tasks of mixture `name`; [name] for a task."""
  found = provider(name)
  return [task.name for task in getattr(found, 'tasks', [found])]


def registered() -> tuple[str, ...]:
  return tuple(sorted(_TEACHER_TASKS))


def shortest_proposition(name: str) -> int:
  """Tokens of a task's shortest proposition template with its fields left
  empty: what its shortest proposition takes at least (filled fields add tokens)."""
  task = get(name)
  vocabulary = provider(name).output_features['targets'].vocabulary
  return min(len(vocabulary.encode(template.format_map(collections.defaultdict(str))))
             for templates in task.propositions.values() for template in templates)


def register(
    name: str,
    source: Union[str, Mapping[str, object], seqio.DataSource],
    instance: str,
    propositions: Mapping[Label, Templates],
    label_field: str = 'label',
    task_type: Optional[str] = None,
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    shuffle_buffer_size: int = 10_000,
    label_thresholds: Optional[Sequence[float]] = None,
    metrics: Sequence[str] = ('accuracy',),
    template_seed: int = 0,
    tfds_data_dir: Optional[str] = None,
) -> seqio.Task:
  """Registers a teacher task in seqio's TaskRegistry.

  Args:
    name: the task's name in the seqio registry.
    source: a TFDS name (`"glue/rte:2.0.0"`, read from `tfds_data_dir`, never
      downloaded), split -> JSONL path or glob (or list of them; `.gz` is read
      transparently; `gs://` works), or any `seqio.DataSource` yielding the fields.
    instance: the text before `[sep]`; str.format over the example's fields.
    propositions: label value -> proposition template (str.format), or a list
      of templates of which one is drawn per example.
    label_field: the field holding the example's label value.
    task_type: the task type, for the task-aware head (default: `name`).
    vocabulary: a seqio vocabulary with `sep_id` and `cls_id` (default: the
      embedded demo BPE).
    shuffle_buffer_size: seqio's shuffle buffer for this task.
    label_thresholds: for a numeric label field: label index = how many
      thresholds the value reaches (`propositions` keys are then 0..n).
    metrics: evaluation metrics (names in `freelm_jax.evaluation.METRICS`).
    template_seed: seed of the per-example template draw.
    tfds_data_dir: data_dir of a TFDS `source`.

  Returns:
    The registered `seqio.Task`.
  """
  templates = _checked_templates(name, propositions, label_thresholds)
  is_paths = not isinstance(source, (str, seqio.DataSource))
  task = TeacherTask(
      name=name, instance=instance, propositions=templates,
      label_field=label_field, task_type=task_type or name,
      split_paths=dict(source) if is_paths else None,
      label_thresholds=None if label_thresholds is None else tuple(label_thresholds),
      metrics=tuple(metrics), template_seed=template_seed)
  task.fields()  # validates the templates
  vocabulary = vocabulary or vocabulary_lib.demo_vocabulary()
  declare_task_type(task.task_type)
  seqio_task = seqio.TaskRegistry.add(
      name, source=_data_source(task, source, tfds_data_dir), preprocessors=[_propositions(task, vocabulary)],
      output_features=_output_features(vocabulary),
      shuffle_buffer_size=shuffle_buffer_size)
  _TEACHER_TASKS[name] = task
  return seqio_task


def _data_source(task: TeacherTask, source, tfds_data_dir: Optional[str]) -> seqio.DataSource:
  """`source` as a seqio.DataSource: a TFDS name's, the task's JSONL paths', or itself."""
  if isinstance(source, str):
    return sources.tfds_source(source, data_dir=tfds_data_dir)
  return _jsonl_source(task) if task.split_paths is not None else source


def _checked_templates(name: str, propositions: Mapping[Label, Templates],
                       label_thresholds: Optional[Sequence[float]]) -> dict:
  """label -> tuple of templates; labels and templates checked."""
  if not propositions:
    raise errors.ConfigError(f'Task {name!r}: `propositions` is empty.')
  if len({type(k) for k in propositions}) != 1:
    raise errors.ConfigError(f'Task {name!r}: label values must all be int or all str.')
  templates = {label: (t,) if isinstance(t, str) else tuple(t)
               for label, t in propositions.items()}
  if not all(templates.values()):
    raise errors.ConfigError(f'Task {name!r}: a label has no template.')
  if label_thresholds is not None and sorted(templates) != list(
      range(len(label_thresholds) + 1)):
    raise errors.ConfigError(f'Task {name!r}: with {len(label_thresholds)} label_thresholds '
                             f'the labels must be 0..{len(label_thresholds)}.')
  return templates


def _output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """`targets` plus the per-proposition features (kept through mixtures),
  each with a leading propositions-of-the-example axis."""
  scalar = lambda dtype: seqio.Feature(
      seqio.PassThroughVocabulary(0), add_eos=False, dtype=dtype, rank=1)
  return {'targets': seqio.Feature(vocabulary, add_eos=False, rank=2),
          'truth': scalar(tf.int32), 'task_type': scalar(tf.int32),
          'candidate': scalar(tf.int32), 'label': scalar(tf.int32), 'length': scalar(tf.int32),
          'example_id': scalar(tf.int64), 'template': scalar(tf.int32),
          'score': scalar(tf.float32)}


def _jsonl_source(task: TeacherTask) -> seqio.DataSource:
  """A checked JSONL source yielding the task's fields (text as strings)."""
  label_type = float if task.label_thresholds is not None else type(task.labels[0])
  signature = {f: tf.TensorSpec([], tf.string) for f in task.fields()}
  signature[task.label_field] = tf.TensorSpec(
      [], {int: tf.int64, float: tf.float32, str: tf.string}[label_type])

  fields = task.fields()

  def convert(row, where, index):
    del index
    task.check_row(row, where)
    out = {f: row[f] if isinstance(row[f], str) else json.dumps(row[f]) for f in fields}
    out[task.label_field] = row[task.label_field]
    return out

  return sources.jsonl_source(task.split_paths, signature, convert)


# Examples are turned into propositions in batches of this many: the HF
# tokenizer then runs once per batch (encode_batch), not once per string.
_BATCH = 128


def _label_index_tf(task: TeacherTask, value: tf.Tensor, example_id: tf.Tensor):
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


def _template_draw(task: TeacherTask, example_id: tf.Tensor) -> tf.Tensor:
  """A seeded per-example draw (int64 [B]), the same for every label of an example."""
  keys = tf.strings.join([f'{task.template_seed}:', tf.strings.as_string(example_id)])
  return tf.strings.to_hash_bucket_fast(keys, 2**31 - 1)


def _every_pair(task: TeacherTask) -> list[tuple[int, int]]:
  """(candidate, template) of each proposition of an example, with every template."""
  return [(c, t) for c, templates in enumerate(task.propositions.values())
          for t in range(len(templates))]


def _drawn_template(task: TeacherTask, ex, fill, rows):
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


def _every_template(task: TeacherTask, ex, fill, rows):
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
  `freelm_jax.tokenizer.proposition_lengths`, which the predictor uses).

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


def _propositions(task: TeacherTask, vocabulary: seqio.Vocabulary,
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


def every_template_dataset(name: str, split: str, seq_len: int) -> tf.data.Dataset:
  """Propositions of every template of every label, per example of a task's
  split, in order (for evaluation that averages over the templates)."""
  task = get(name)
  seqio_task = seqio.get_mixture_or_task(name)
  vocabulary = seqio_task.output_features['targets'].vocabulary
  ds = seqio_task.source.get_dataset(split=split, shuffle=False)
  return _propositions(task, vocabulary, every_template=True)(
      ds, {'targets': seq_len}).unbatch()
