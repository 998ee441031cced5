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

from freelm_jax.common import errors
from tasks import rewriting
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
    metrics: evaluation metrics (names in `freelm_jax.training.evaluation.METRICS`).
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
      name, source=_data_source(task, source, tfds_data_dir), preprocessors=[rewriting.to_propositions(task, vocabulary)],
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


def every_template_dataset(name: str, split: str, seq_len: int) -> tf.data.Dataset:
  """Propositions of every template of every label, per example of a task's
  split, in order (for evaluation that averages over the templates)."""
  task = get(name)
  seqio_task = seqio.get_mixture_or_task(name)
  vocabulary = seqio_task.output_features['targets'].vocabulary
  ds = seqio_task.source.get_dataset(split=split, shuffle=False)
  return rewriting.to_propositions(task, vocabulary, every_template=True)(
      ds, {'targets': seq_len}).unbatch()
