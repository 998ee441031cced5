"""Teacher tasks in FreeLM's unified proposition format.

Each labelled example yields one proposition per candidate label,

    <instance> [sep] <proposition> [cls]

and exactly the one for the example's own label is true. `register` turns a
source plus str.format templates into a seqio Task whose examples are single
propositions with the features

    targets     int32 [T]  instance tokens, [sep], proposition tokens, [cls]
    truth       int32      1 if this proposition is the true one
    task_type   int32      id of the task type (for the task-aware head)
    candidate   int32      index of this proposition's label among the labels
    label       int32      index of the example's true label
    example_id  int64      position of the example in its split

Templates are compiled to TensorFlow string ops, so any seqio source works;
JSONL sources additionally check every row and name file:line on errors.
"""

import dataclasses
import json
import string
from typing import Iterator, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from tasks import sources
from tasks import vocabulary as vocabulary_lib

Label = Union[int, str]
_TEACHER_TASKS: dict[str, 'TeacherTask'] = {}
_TASK_TYPES: list[str] = []


@dataclasses.dataclass(frozen=True)
class TeacherTask:
  """What evaluation and baselines need to know about a registered task."""

  name: str
  instance: str
  propositions: Mapping[Label, str]
  label_field: str
  task_type: str
  split_paths: Optional[Mapping[str, object]]  # None unless the source is JSONL.

  @property
  def labels(self) -> tuple:
    return tuple(self.propositions)

  @property
  def task_type_id(self) -> int:
    return _TASK_TYPES.index(self.task_type)

  def fields(self) -> list[str]:
    """Every field a row needs: template fields plus the label field."""
    names = template_fields(self.instance, self.name)
    for template in self.propositions.values():
      names += template_fields(template, self.name)
    return list(dict.fromkeys(names + [self.label_field]))

  def check_row(self, row: dict, where: str) -> None:
    """Raises DataError naming task, field/label and the row."""
    for field in self.fields():
      if field not in row:
        raise sources.DataError(
            f'{where}: task {self.name!r}: example has no field {field!r} '
            f'(fields: {", ".join(sorted(row))}).')
    if row[self.label_field] not in self.propositions:
      raise sources.DataError(
          f'{where}: task {self.name!r}: label {row[self.label_field]!r} has no '
          f'proposition (labels: {", ".join(map(repr, self.labels))}).')

  def examples(self, split: str) -> Iterator[tuple[str, list[str], int]]:
    """(instance text, per-candidate target texts, true index) of a JSONL split.

    A candidate's target is the text its template adds beyond the instance
    (its own fields' values), or the whole proposition if it has none. Used by
    the no-model shortcut baseline.
    """
    instance_fields = set(template_fields(self.instance, self.name))
    paths = sources.expand_paths(self.split_paths[split])
    for where, row in sources.read_jsonl(paths):
      self.check_row(row, where)
      targets = []
      for template in self.propositions.values():
        own = [f for f in template_fields(template, self.name) if f not in instance_fields]
        targets.append(' '.join(str(row[f]) for f in own) if own
                       else template.format(**row))
      yield (self.instance.format(**row), targets,
             self.labels.index(row[self.label_field]))


def template_fields(template: str, task: str) -> list[str]:
  """Names of the `{field}`s of a template; rejects what TF cannot format."""
  names = []
  for _, field, spec, conversion in string.Formatter().parse(template):
    if field is None:
      continue
    if not field.isidentifier() or spec or conversion:
      raise ValueError(
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


def get(name: str) -> TeacherTask:
  """The registered teacher task; unknown names list the registered ones."""
  if name not in _TEACHER_TASKS:
    raise ValueError(f'Unknown teacher task {name!r}; registered: '
                     f'{", ".join(sorted(_TEACHER_TASKS)) or "none"}.')
  return _TEACHER_TASKS[name]


def registered() -> tuple[str, ...]:
  return tuple(sorted(_TEACHER_TASKS))


def register(
    name: str,
    source: Union[Mapping[str, object], seqio.DataSource],
    instance: str,
    propositions: Mapping[Label, str],
    label_field: str = 'label',
    task_type: Optional[str] = None,
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    shuffle_buffer_size: int = 10_000,
) -> seqio.Task:
  """Registers a teacher task in seqio's TaskRegistry.

  Args:
    name: the task's name in the seqio registry.
    source: split -> JSONL path or glob (or list of them; `.gz` is read
      transparently), or any `seqio.DataSource` yielding the fields.
    instance: the text before `[sep]`; str.format over the example's fields.
    propositions: label value -> proposition template (str.format).
    label_field: the field holding the example's label value.
    task_type: the task type, for the task-aware head (default: `name`).
    vocabulary: a seqio vocabulary with `sep_id` and `cls_id` (default: the
      embedded demo BPE).
    shuffle_buffer_size: seqio's shuffle buffer for this task.

  Returns:
    The registered `seqio.Task`.
  """
  if not propositions:
    raise ValueError(f'Task {name!r}: `propositions` is empty.')
  if len({type(k) for k in propositions}) != 1:
    raise ValueError(f'Task {name!r}: label values must all be int or all str.')
  task = TeacherTask(
      name=name, instance=instance, propositions=dict(propositions),
      label_field=label_field, task_type=task_type or name,
      split_paths=None if isinstance(source, seqio.DataSource) else dict(source))
  task.fields()  # validates the templates
  if not isinstance(source, seqio.DataSource):
    source = _jsonl_source(task)
  vocabulary = vocabulary or vocabulary_lib.demo_vocabulary()
  if task.task_type not in _TASK_TYPES:
    _TASK_TYPES.append(task.task_type)
  seqio_task = seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[
          _number_examples,
          _to_propositions(task),
          _tokenize(vocabulary),
          _join(vocabulary),
      ],
      output_features=_output_features(vocabulary),
      shuffle_buffer_size=shuffle_buffer_size)
  _TEACHER_TASKS[name] = task
  return seqio_task


def _output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """`targets` plus the scalar proposition features (kept through mixtures)."""
  scalar = lambda dtype: seqio.Feature(
      seqio.PassThroughVocabulary(0), add_eos=False, dtype=dtype, rank=0)
  return {'targets': seqio.Feature(vocabulary, add_eos=False),
          'truth': scalar(tf.int32), 'task_type': scalar(tf.int32),
          'candidate': scalar(tf.int32), 'label': scalar(tf.int32),
          'example_id': scalar(tf.int64)}


def _jsonl_source(task: TeacherTask) -> seqio.DataSource:
  """A checked JSONL source yielding the task's fields (text as strings)."""
  label_type = type(task.labels[0])
  signature = {f: tf.TensorSpec([], tf.string) for f in task.fields()}
  signature[task.label_field] = tf.TensorSpec(
      [], tf.int64 if label_type is int else tf.string)

  def convert(row, where, index):
    del index
    task.check_row(row, where)
    out = {f: row[f] if isinstance(row[f], str) else json.dumps(row[f])
           for f in task.fields()}
    out[task.label_field] = row[task.label_field]
    return out

  return sources.jsonl_source(task.split_paths, signature, convert)


def _number_examples(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Adds `example_id`: the example's position in its (unshuffled) split."""
  return dataset.enumerate().map(lambda i, ex: dict(ex, example_id=i))


def _to_propositions(task: TeacherTask):
  """Preprocessor: one example -> one proposition string per candidate label."""
  labels = tf.constant(task.labels)

  def expand(ex):
    missing = [f for f in task.fields() if f not in ex]
    if missing:
      raise ValueError(f'Task {task.name!r}: the source has no field {missing[0]!r}.')
    label_id = tf.cast(tf.argmax(tf.cast(
        tf.equal(labels, tf.cast(ex[task.label_field], labels.dtype)), tf.int32)), tf.int32)
    count = len(task.labels)
    return tf.data.Dataset.from_tensor_slices({
        'instance': tf.fill([count], _format_tf(task.instance, ex)),
        'proposition': tf.stack(
            [_format_tf(t, ex) for t in task.propositions.values()]),
        'candidate': tf.range(count, dtype=tf.int32),
        'truth': tf.cast(tf.range(count) == label_id, tf.int32),
        'label': tf.fill([count], label_id),
        'task_type': tf.fill([count], tf.constant(task.task_type_id, tf.int32)),
        'example_id': tf.fill([count], ex['example_id']),
    })

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.flat_map(expand)

  return preprocess


def _tokenize(vocabulary: seqio.Vocabulary):
  """Preprocessor: token ids of the instance and of the proposition."""

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda ex: dict(
        ex, instance=vocabulary.encode_tf(ex['instance']),
        proposition=vocabulary.encode_tf(ex['proposition'])),
        num_parallel_calls=tf.data.AUTOTUNE)

  return preprocess


def _join(vocabulary: seqio.Vocabulary):
  """Preprocessor: `targets` = instance [sep] proposition [cls], fitted to length.

  When too long, the instance is cut first (from its end), then the
  proposition; `[sep]` and `[cls]` are always kept.
  """

  def preprocess(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
    length = sequence_length['targets']
    if length < 3:
      raise ValueError(f'TEACHER_SEQ_LEN must be at least 3, got {length}.')

    def join(ex):
      proposition = ex.pop('proposition')[:length - 2]
      instance = ex.pop('instance')[:length - 2 - tf.size(proposition)]
      targets = tf.concat([instance, [vocabulary.sep_id], proposition,
                           [vocabulary.cls_id]], axis=0)
      return dict(ex, targets=tf.cast(targets, tf.int32))

    return dataset.map(join, num_parallel_calls=tf.data.AUTOTUNE)

  return preprocess
