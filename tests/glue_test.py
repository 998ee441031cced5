"""The GLUE suite, TFDS/JSONL sources, GPT-2 padding, mixtures and the GLUE metrics."""

import json
import pathlib
import subprocess
import sys
import uuid

import numpy as np
import pytest
import scipy.stats
import seqio
from sklearn import metrics as sk_metrics
import tensorflow_datasets as tfds
import tokenizers

import tasks
from freelm_jax.data import input_pipeline
from freelm_jax.training import evaluation
from tasks import glue
from tasks import sources
from tasks import vocabulary

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / 'shared' / 'data' / 'glue'  # tests using it skip without it


def _name(prefix='t'):
  return f'{prefix}_{uuid.uuid4().hex[:8]}'


def _write_jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return str(path)


def _read(dataset):
  return list(dataset.as_numpy_iterator())  # to the end: no iterator left in flight


@pytest.fixture(scope='module')
def small_glue(tmp_path_factory):
  """The first 6 rows of each ../shared GLUE file (validation and paper1k)."""
  if not SHARED_GLUE.is_dir():
    pytest.skip('../shared/data/glue is absent')
  out = tmp_path_factory.mktemp('glue')
  for path in sorted(SHARED_GLUE.glob('*.jsonl')):
    with open(path) as f:
      (out / path.name).write_text(''.join(f.readline() for _ in range(6)))
  return out


@pytest.fixture(scope='module')
def gpt2_format_vocab(tmp_path_factory):
  """A tiny byte-level BPE in GPT-2's file format: like GPT-2, "!" is id 0."""
  out = tmp_path_factory.mktemp('gpt2like')
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(['Hello world! Wow!!! The cat sat on the mat.'] * 20,
                          vocab_size=300, min_frequency=2)
  bpe.save_model(str(out))
  vocab = vocabulary.gpt2_vocabulary(str(out))
  assert vocab.encode('!') == [0] and vocab.pad_id != 0
  return str(out)


# --- Templates and propositions -------------------------------------------


def test_sst2_uses_the_authors_wording():
  # FreeLM's README: "... [sep] Here, the movie review is emotionally negative. [cls]".
  assert glue.SPECS['sst2']['propositions'] == {
      0: ['Here, the movie review is emotionally negative.'],
      1: ['Here, the movie review is emotionally positive.']}


@pytest.mark.parametrize('task', sorted(glue.SPECS))
def test_every_label_has_its_templates_over_real_fields(task):
  spec = glue.SPECS[task]
  # The authors' wording is one template per label; ours, two.
  fewest = 1 if task in glue.AUTHORS_WORDING else 2
  assert all(len(t) >= fewest for t in spec['propositions'].values())
  fields = {'sst2': {'sentence'}, 'cola': {'sentence'}, 'mnli': {'premise', 'hypothesis'},
            'qnli': {'question', 'sentence'}, 'qqp': {'question1', 'question2'}}.get(
                task, {'sentence1', 'sentence2'})
  for template in [spec['instance']] + sum(map(list, spec['propositions'].values()), []):
    assert set(tasks.propositions.template_fields(template, task)) <= fields
  assert spec['task_type'] in glue.TASK_TYPES


@pytest.mark.parametrize('task', ['sst2', 'cola', 'mnli_matched', 'qqp', 'stsb'])
def test_local_twin_yields_one_proposition_per_label_exactly_one_true(small_glue, task):
  names = glue.register_local(str(small_glue), prefix='twin_')
  assert f'twin_{task}' in names['paper1k'] and f'twin_{task}' in names['validation']
  info = tasks.get_teacher_task(f'twin_{task}')
  props = _read(input_pipeline.teacher_dataset(
      info.name, 128, 'paper1k', shuffle=False, seed=None, num_epochs=1))
  rows = [json.loads(l) for l in open(small_glue / f'{task}.paper1k.jsonl')]
  assert len(props) == len(rows) * len(info.labels)
  for i, row in enumerate(rows):
    group = [p for p in props if p['example_id'] == i]
    label = info.label_index(row['label'])
    assert [p['candidate'] for p in group] == list(range(len(info.labels)))
    assert [p['truth'] for p in group] == [int(c == label) for c in range(len(info.labels))]
    assert len({p['template'] for p in group}) == 1  # one draw per example
    assert all(p['score'] == pytest.approx(float(row['label'])) for p in group)
  templates = len(next(iter(glue.SPECS[glue.LOCAL_TASKS[task]]['propositions'].values())))
  assert len({p['template'] for p in props}) == templates  # every template is drawn


def test_template_draw_is_fixed_by_the_seed(tmp_path):
  rows = [{'s': f'sentence {i}', 'label': i % 2} for i in range(40)]
  path = _write_jsonl(tmp_path / 'x.jsonl', rows)
  draws = []
  for seed in (0, 0, 1):
    name = _name()
    tasks.register(name, {'validation': path}, '{s}',
                   {0: ['No A.', 'No B.'], 1: ['Yes A.', 'Yes B.']}, template_seed=seed)
    draws.append([p['template'] for p in _read(input_pipeline.teacher_dataset(
        name, 32, 'validation', False, None, 1))])
  assert draws[0] == draws[1] and draws[0] != draws[2]


def test_stsb_score_is_binned_at_three(tmp_path):
  _write_jsonl(tmp_path / 'stsb.validation.jsonl', [
      {'sentence1': 'a', 'sentence2': 'b', 'label': s} for s in (0.0, 2.99, 3.0, 5.0)])
  names = glue.register_local(str(tmp_path), prefix=_name('sts') + '_')
  info = tasks.get_teacher_task(names['validation'][0])
  props = _read(input_pipeline.teacher_dataset(info.name, 64, 'validation', False, None, 1))
  assert [p['label'] for p in props[::2]] == [0, 0, 1, 1]


def test_a_label_without_proposition_from_any_source_names_task_label_example():
  def dataset_fn(split, shuffle_files, seed=None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.data.Dataset.from_tensor_slices({'s': ['ok', 'bad'], 'label': [1, 7]})
  name = _name()
  tasks.register(name, seqio.FunctionDataSource(dataset_fn, splits=['validation']), '{s}',
                 {0: 'no', 1: 'yes'})
  with pytest.raises(Exception) as error:
    _read(input_pipeline.teacher_dataset(name, 16, 'validation', False, None, 1))
  message = sources.explain(error.value)
  assert message == (f"task '{name}': label 7 has no proposition (labels: 0, 1); "
                     'example 1 of the split.')


# --- TFDS sources (no network) ---------------------------------------------


def test_tfds_names_become_read_only_tfds_sources():
  name = _name()
  task = tasks.register(name, 'glue/rte:2.0.0', '{sentence1}',
                        glue.SPECS['rte']['propositions'], tfds_data_dir='/tmp/no_tfds')
  assert isinstance(task.source, sources.PreparedTfdsSource)
  assert task.source.tfds_dataset.name == 'glue/rte:2.0.0'
  assert task.source.tfds_dataset.data_dir == '/tmp/no_tfds'
  glue.register_tfds(prefix='tfdsname_')
  matched = seqio.get_mixture_or_task('tfdsname_mnli_matched').source
  assert matched.tfds_dataset.name == 'glue/mnli:2.0.0'
  assert list(matched.splits) == ['validation']  # read from 'validation_matched'
  mixture = seqio.get_mixture_or_task('tfdsname_train')
  assert sorted(t.name for t in mixture.tasks) == sorted(
      f'tfdsname_{t}' for t in glue.SPECS)
  with pytest.raises(ValueError, match='not a TFDS name'):
    sources.tfds_source('/data/x.jsonl')


def test_unprepared_tfds_dataset_fails_naming_it_and_the_data_dir(tmp_path):
  source = sources.tfds_source('glue/rte:2.0.0', data_dir=str(tmp_path))
  with pytest.raises(sources.DataError, match=rf"'glue/rte:2.0.0' is not prepared in data_dir '{tmp_path}'"):
    source.get_dataset('validation')


def test_tfds_glue_task_reads_mocked_data():
  glue.register_tfds(prefix='tfdsmock_')
  with tfds.testing.mock_data(num_examples=3):
    props = _read(input_pipeline.teacher_dataset(
        'tfdsmock_mnli_mismatched', 64, 'validation', False, None, 1))
  assert len(props) == 3 * 3
  assert sum(p['truth'] for p in props) == 3
  assert all(p['tokens'][p['lengths'] - 1] == vocabulary.demo_vocabulary().cls_id
             for p in props)


def test_tfds_language_stream_reads_mocked_data():
  name = tasks.language.stream('lm1b:1.1.0', name=_name('lm1b'))
  with tfds.testing.mock_data(num_examples=4):
    rows = _read(input_pipeline.lm_dataset(name, 32, 'train', seed=0, num_epochs=1))
  assert rows and all(r['tokens'].shape == (32,) for r in rows)


# --- Padding: GPT-2's id 0 is "!" ------------------------------------------


def test_lm_stream_trains_on_exclamation_marks_and_not_on_padding(tmp_path, gpt2_format_vocab):
  vocab = vocabulary.gpt2_vocabulary(gpt2_format_vocab)
  docs = ['Wow!!! Hello world!', '!', 'The cat sat!']
  path = _write_jsonl(tmp_path / 'lm.jsonl', [{'text': d} for d in docs])
  name = tasks.language.stream({'train': path}, name=_name('bang'), vocab_dir=gpt2_format_vocab)
  rows = _read(input_pipeline.lm_dataset(name, 64, 'train', seed=0, num_epochs=1))
  targets = np.concatenate([r['targets'] for r in rows])
  weights = np.concatenate([r['weights'] for r in rows])
  tokens = np.concatenate([r['tokens'] for r in rows])
  bangs = sum(vocab.encode(d).count(0) for d in docs)
  assert bangs >= 3 and np.sum(targets == 0) == bangs
  assert np.all(weights[targets == 0] == 1)  # "!" is trained on
  assert weights.sum() == sum(len(vocab.encode(d)) + 1 for d in docs)  # + EOS each
  assert np.all(targets[weights == 0] == vocab.pad_id)  # padding is [pad], not "!"
  assert np.all(tokens[weights == 0] == vocab.pad_id)


def test_teacher_batches_pad_with_pad_id_and_keep_exclamation_marks(tmp_path, gpt2_format_vocab):
  vocab = vocabulary.gpt2_vocabulary(gpt2_format_vocab)
  path = _write_jsonl(tmp_path / 't.jsonl', [{'s': 'Wow!', 'label': 1}])
  name = _name()
  tasks.register(name, {'validation': path}, '{s}', {0: 'No!', 1: 'Yes!'}, vocabulary=vocab)
  for p in _read(input_pipeline.teacher_dataset(name, 32, 'validation', False, None, 1)):
    real, padding = p['tokens'][:p['lengths']], p['tokens'][p['lengths']:]
    assert np.sum(real == 0) == 2 and real[-1] == vocab.cls_id
    assert np.all(padding == vocab.pad_id)


# --- Mixtures and task-type ids --------------------------------------------


def test_mixture_is_examples_proportional_with_a_cap(tmp_path):
  row = {'sentence1': 'a', 'sentence2': 'b', 'label': 0}
  _write_jsonl(tmp_path / 'rte.train.jsonl', [row] * 3)
  _write_jsonl(tmp_path / 'mrpc.train.jsonl', [row] * 12)
  _write_jsonl(tmp_path / 'wnli.train.jsonl', [row] * 30)
  prefix = _name('mix') + '_'
  mixture = seqio.get_mixture_or_task(glue.local_mixture(str(tmp_path), prefix=prefix, cap=20))
  rates = {t.name[len(prefix):]: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {'rte': 3, 'mrpc': 12, 'wnli': 20}


def test_pipelines_use_a_recorded_task_type_order(tmp_path):
  path = _write_jsonl(tmp_path / 'x.jsonl', [{'s': 'a', 'label': 0}])
  name = _name()
  tasks.register(name, {'validation': path}, '{s}', {0: 'x', 1: 'y'}, task_type=name)
  recorded = [name, 'sentiment']
  props = _read(input_pipeline.teacher_dataset(name, 16, 'validation', False, None, 1,
                                               task_types=recorded))
  assert {p['task_type'] for p in props} == {0}
  remap = input_pipeline.task_type_remap(recorded)
  assert remap[tasks.task_types().index('sentiment')] == 1
  assert sorted(remap) == list(range(len(tasks.task_types())))


# --- Metrics ---------------------------------------------------------------


def test_metric_functions_match_sklearn_and_scipy():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 50)
  p_true = rng.random((50, 2))
  gold = rng.random(50) * 5
  prediction = {'labels': list(labels), 'predicted': list(p_true.argmax(1)),
                'gold_scores': list(gold), 'p_true': p_true}
  got = evaluation.task_metrics(list(evaluation.METRICS), prediction)
  assert got['accuracy'] == pytest.approx(sk_metrics.accuracy_score(labels, p_true.argmax(1)))
  assert got['f1'] == pytest.approx(sk_metrics.f1_score(labels, p_true.argmax(1)))
  assert got['matthews'] == pytest.approx(sk_metrics.matthews_corrcoef(labels, p_true.argmax(1)))
  similarity = p_true[:, 1] / p_true.sum(1)
  assert got['pearson'] == pytest.approx(scipy.stats.pearsonr(gold, similarity)[0])
  assert got['spearman'] == pytest.approx(scipy.stats.spearmanr(gold, similarity)[0])


def test_each_glue_task_reports_its_glue_metric():
  assert 'matthews' in glue.SPECS['cola']['metrics']
  assert 'f1' in glue.SPECS['mrpc']['metrics'] and 'f1' in glue.SPECS['qqp']['metrics']
  assert {'pearson', 'spearman'} <= set(glue.SPECS['stsb']['metrics'])
  assert 'metrics' not in glue.SPECS['sst2']  # accuracy


# --- Gin: the paper recipe parses; the local twin trains and evaluates ------


def _cli(*args, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def test_paper_recipe_parses_and_registers_its_tasks(gpt2_format_vocab):
  code = f'''
import json
import seqio
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
gin_utils.parse(['gin/paper.gin'], ["GPT2_VOCAB_DIR = '{gpt2_format_vocab}'",
                                    "INIT_FROM = '/models/gpt2-medium'"])
data = settings.DataConfig()
mixture = seqio.get_mixture_or_task(data.teacher_mixture)
lm = seqio.get_mixture_or_task(data.lm_task)
print(json.dumps(dict(lm=lm.source.tfds_dataset.name, mixture=sorted(t.name for t in mixture.tasks),
                      eval=list(data.eval_tasks), seq=data.lm_seq_len,
                      vocab=lm.output_features['targets'].vocabulary.vocab_size,
                      layers=settings.ModelConfig().num_layers)))
'''
  result = _cli('-c', code)
  assert result.returncode == 0, result.stderr[-2000:]
  facts = json.loads(result.stdout.strip().splitlines()[-1])
  assert facts['lm'] == 'c4/en:3.1.0' and facts['seq'] == 1024 and facts['layers'] == 24
  assert facts['mixture'] == sorted(f'glue_{t}' for t in glue.SPECS)
  assert 'glue_mnli_matched' in facts['eval'] and 'glue_mnli_mismatched' in facts['eval']
  assert facts['vocab'] > 256  # the GPT-2-format BPE plus [sep] [cls] [pad]


def test_local_twin_trains_both_objectives_and_scores_paper1k(small_glue, tmp_path):
  model_dir = tmp_path / 'run'
  model = ['--gin.TRAIN_STEPS=2', '--gin.LM_BATCH_SIZE=8', '--gin.TEACHER_BATCH_SIZE=8',
           '--gin_bindings=train_lib.DataConfig.eval_batch_size=16',
           '--gin_bindings=train_lib.DataConfig.eval_tasks=[]',  # glue_paper.gin sets them
           '--gin_bindings=network.ModelConfig.num_layers=1',
           # Not checked here (lm_eval_test checks both); the eval CLI inherits them.
           '--gin.LM_EVAL_BATCHES=0', '--gin_bindings=train_lib.DataConfig.eval_probe=False']
  train = _cli('-m', 'freelm_jax.train', '--gin_file=gin/base.gin',
               '--gin_file=gin/data/glue_local.gin', f"--gin.GLUE_DIR='{small_glue}'",
               "--gin.GLUE_TRAIN_SPLIT='validation'",  # ../shared has no train files
               f'--model_dir={model_dir}', *model)
  assert train.returncode == 0, train.stderr[-3000:]
  rows = [json.loads(l) for l in open(model_dir / 'metrics.jsonl')]
  assert {r['objective'] for r in rows if r['kind'] == 'train'} == {'lm', 'teacher'}
  newest = max((model_dir / 'checkpoints').glob('[0-9]*'), key=lambda p: int(p.name))
  facts = json.loads((newest / 'run' / 'metadata').read_text())
  # Ids go to the task types this run uses (the local files' types), in
  # GLUE's declared order; the embedded default's types get none.
  assert facts['task_types'] == [t for t in glue.TASK_TYPES if t in facts['task_types']]
  assert set(facts['trained_task_types']) == set(facts['task_types'])
  assert 'nli' in facts['trained_task_types']

  result = _cli('-m', 'freelm_jax.eval', f'--model_dir={model_dir}',
                '--gin_file=gin/eval/glue_paper.gin')
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout
  for task in ('cola', 'mnli_matched', 'mnli_mismatched', 'qqp', 'sst2', 'stsb'):
    assert f'glue_local_{task}' in table
  for column in ('accuracy', 'f1', 'matthews', 'pearson', 'spearman'):
    assert column in table
  evals = [json.loads(l) for l in open(model_dir / 'metrics.jsonl')]
  evals = [r for r in evals if r['kind'] == 'eval' and r['split'] == 'paper1k']
  by_task = {r['task']: r for r in evals}
  assert by_task['glue_local_cola']['num_examples'] == 6
  assert by_task['glue_local_cola']['matthews'] is not None
  assert by_task['glue_local_qqp']['f1'] is not None
  assert {'pearson', 'spearman', 'accuracy'} <= set(by_task['glue_local_stsb'])
