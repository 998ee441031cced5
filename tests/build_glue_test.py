"""tasks/build_glue.py: GLUE_DIR's files from GLUE's own files or prepared TFDS
data (tiny fakes here), read as TFDS reads them, and the paper's 1k samples."""

import json
import os
import pathlib
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from freelm_jax import cli
from tasks import build_glue
from tasks import glue
from tasks import sources

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / 'shared' / 'data' / 'glue'  # the test using it skips without it

# MNLI's TSVs: GLUE's columns, the text and label ones among others.
MNLI_HEADER = ['index', 'promptID', 'pairID', 'genre', 'sentence1', 'sentence2', 'gold_label']
# A fake GLUE download: {path: lines}. QQP's line 2 lacks its label and is
# dropped, as TFDS drops it: the row after it keeps idx 2.
GLUE_FILES = {
    'SST-2/train.tsv': ['sentence\tlabel', 'a fine film \t1', 'dull\t0', 'grand\t1'],
    'SST-2/dev.tsv': ['sentence\tlabel', 'so bad\t0', 'so good\t1'],
    'CoLA/train.tsv': ['gj04\t1\t\tThe cat sat.', 'gj04\t0\t*\tCat the sat.'],
    'CoLA/dev.tsv': ['gj04\t0\t*\tSat cat.', 'gj04\t1\t\tA dog ran.', 'gj04\t1\t\tIt rained.'],
    'MNLI/train.tsv': ['\t'.join(MNLI_HEADER), '0\t1\t1e\tgov\tP0.\tH0.\tneutral',
                       '1\t2\t2c\tfic\tP1.\tH1.\tcontradiction'],
    'MNLI/dev_matched.tsv': ['\t'.join(MNLI_HEADER), '0\t1\t1e\tgov\tPm0.\tHm0.\tentailment',
                             '1\t2\t2c\tgov\tPm1.\tHm1.\tcontradiction',
                             '2\t3\t3n\tgov\tPm2.\tHm2.\tneutral'],
    'MNLI/dev_mismatched.tsv': ['\t'.join(MNLI_HEADER), '0\t1\t1n\tnow\tPx0.\tHx0.\tneutral',
                                '1\t2\t2e\tnow\tPx1.\tHx1.\tentailment'],
    'QQP/train.tsv': ['id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate',
                      '5\t1\t2\tWhy?\tHow come?\t1', '6\t3\t4\tWhat?\tWho?\t0'],
    'QQP/dev.tsv': ['id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate',
                    '7\t1\t2\tIs it "big"?\tIs it large?\t1', '8\t3\t4\tbroken',
                    '9\t5\t6\tWhen?\tWhere?\t0'],
    'STS-B/train.tsv': ['index\tgenre\tsentence1\tsentence2\tscore',
                        '0\tnews\tA man eats.\tA man is eating.\t4.8'],
    'STS-B/dev.tsv': ['index\tgenre\tsentence1\tsentence2\tscore',
                      '0\tnews\tA dog.\tA cat.\t0.4', '1\tnews\tRain.\tIt rains.\t3.0'],
    'QNLI/train.tsv': ['index\tquestion\tsentence\tlabel', '0\tWho?\tHe did.\tentailment'],
    'QNLI/dev.tsv': ['index\tquestion\tsentence\tlabel', '0\tWhen?\tNo.\tnot_entailment'],
    'RTE/train.tsv': ['index\tsentence1\tsentence2\tlabel', '0\tA b.\tA.\tentailment'],
    'RTE/dev.tsv': ['index\tsentence1\tsentence2\tlabel', '0\tC d.\tE.\tnot_entailment'],
    'WNLI/train.tsv': ['index\tsentence1\tsentence2\tlabel', '0\tI x.\tI.\t1'],
    'WNLI/dev.tsv': ['index\tsentence1\tsentence2\tlabel', '0\tY z.\tZ.\t0'],
    # MRPC: both splits from the corpus file (it starts with a byte-order mark).
    'MRPC/msr_paraphrase_train.txt': [
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String', '1\t10\t11\tS a.\tS b.',
        '0\t12\t13\tS c.\tS d.', '1\t14\t15\tS e.\tS f.'],
    'MRPC/dev_ids.tsv': ['12\t13'],
}
IDS = {'sst2': [1, 0], 'cola': [2, 0], 'mnli_matched': [2, 1], 'mnli_mismatched': [1],
       'qqp': [2], 'stsb': [0, 1]}


@pytest.fixture(scope='module')
def glue_files(tmp_path_factory):
  root = tmp_path_factory.mktemp('glue_download')
  for name, lines in GLUE_FILES.items():
    (root / name).parent.mkdir(exist_ok=True)
    (root / name).write_text(''.join(l + '\n' for l in lines), encoding='utf-8')
  return root


def _read(path):
  return [json.loads(l) for l in open(path, encoding='utf-8')]


def _tfds_rows(config, split, root):
  """TFDS's own reading of the fake files (its builder's example generator)."""
  builder = tfds.builder(f'glue/{config}:{glue.TFDS_VERSION}', data_dir=str(root / 'tfds'))
  folder = root / build_glue.COLUMNS[config].folder
  if config == 'mrpc':
    files = {'train': folder / 'msr_paraphrase_train.txt', 'dev_ids': folder / 'dev_ids.tsv'}
    examples = builder._generate_examples(None, 'dev' if split == 'validation' else 'train',
                                          mrpc_files=files)
  else:
    examples = builder._generate_examples(str(folder / build_glue.TSV_FILES[split]),
                                          'train' if split == 'train' else 'dev')
  encode = builder.info.features['label'].encode_example
  return [{**e, 'label': float(encode(e['label'])) if config == 'stsb' else encode(e['label'])}
          for _, e in examples]


def test_columns_are_tfds_glue_configs():
  configs = tfds.builder_cls('glue').builder_configs
  for config, columns in build_glue.COLUMNS.items():
    tfds_config = configs[config]
    assert list(columns.text) == list(tfds_config.text_features)
    if config != 'mrpc':  # TFDS reads MRPC's corpus file by its own code
      assert columns.text == tfds_config.text_features
    assert columns.label == tfds_config.label_column and columns.folder == tfds_config.data_dir
    assert columns.classes == tuple(tfds_config.label_classes or ())
  assert set(build_glue.COLUMNS) == set(glue.SPECS)


@pytest.mark.parametrize('config,split', [
    (c, s) for c, (_, splits) in build_glue.FILES.items() for s in splits.values()])
def test_glue_files_give_tfds_rows_labels_and_idx(glue_files, config, split):
  config = build_glue.FILES[config][0]
  ours = build_glue.GlueFilesSource(str(glue_files)).rows(config, split)
  theirs = _tfds_rows(config, split, glue_files)
  assert ours == sorted(theirs, key=lambda r: r['idx'])
  assert ours


def test_build_writes_the_local_twins_files(glue_files, tmp_path):
  out = tmp_path / 'glue'
  lines = []
  written = build_glue.build(str(out), build_glue.GlueFilesSource(str(glue_files)),
                             ids=IDS, log=lines.append)
  expected = {f'{t}.{s}.jsonl' for t in build_glue.COLUMNS if t != 'mnli'
              for s in ('train', 'validation')}
  expected |= {'mnli.train.jsonl', 'mnli_matched.validation.jsonl',
               'mnli_mismatched.validation.jsonl'} | {f'{t}.paper1k.jsonl' for t in IDS}
  assert sorted(os.listdir(out)) == sorted(expected)
  assert sorted(lines) == sorted(f'wrote {p}: {n} rows' for p, n in written.items())
  assert _read(out / 'mnli_matched.validation.jsonl')[2] == {
      'premise': 'Pm2.', 'hypothesis': 'Hm2.', 'label': 1, 'idx': 2}  # neutral = 1
  assert [r['idx'] for r in _read(out / 'qqp.validation.jsonl')] == [0, 2]
  assert _read(out / 'stsb.validation.jsonl')[0]['label'] == float(np.float32(0.4))
  assert _read(out / 'cola.train.jsonl')[1] == {'sentence': 'Cat the sat.', 'label': 0, 'idx': 1}
  assert [r['idx'] for r in _read(out / 'mrpc.validation.jsonl')] == [1]
  # The paper's samples: the validation rows of the ids, in the ids' order.
  validation = _read(out / 'mnli_matched.validation.jsonl')
  assert _read(out / 'mnli_matched.paper1k.jsonl') == [validation[2], validation[1]]
  assert [r['question1'] for r in _read(out / 'qqp.paper1k.jsonl')] == ['When?']
  # The local twin reads them: MNLI trains from mnli.train, is scored on both validations.
  assert set(glue.local_eval_tasks(str(out), prefix='built_')) == {f'built_{t}' for t in IDS}
  mixture = glue.local_mixture(str(out), prefix='built_')
  assert 'built_mnli' in [t.name for t in glue.seqio.get_mixture_or_task(mixture).tasks]


def test_a_paper1k_id_missing_from_the_source_is_an_error_naming_it(glue_files, tmp_path):
  with pytest.raises(sources.DataError, match=r'qqp: paper1k id 1 is not an idx'):
    build_glue.build(str(tmp_path), build_glue.GlueFilesSource(str(glue_files)),
                     ['qqp'], ids={'qqp': [2, 1]}, log=lambda _: None)
  assert not (tmp_path / 'qqp.paper1k.jsonl').exists()


def test_files_are_kept_unless_overwrite(glue_files, tmp_path):
  source, lines = build_glue.GlueFilesSource(str(glue_files)), []
  (tmp_path / 'sst2.train.jsonl').write_text('kept\n')
  written = build_glue.build(str(tmp_path), source, ['sst2'], ids=IDS, log=lines.append)
  assert (tmp_path / 'sst2.train.jsonl').read_text() == 'kept\n'
  assert lines[0].startswith(f'kept {tmp_path / "sst2.train.jsonl"}') and len(written) == 2
  assert build_glue.build(str(tmp_path), source, ['sst2'], ids=IDS, log=lines.append) == {}
  build_glue.build(str(tmp_path), source, ['sst2'], overwrite=True, ids=IDS, log=lines.append)
  assert len(_read(tmp_path / 'sst2.train.jsonl')) == 3
  assert sorted(os.listdir(tmp_path)) == [f'sst2.{s}.jsonl' for s in ('paper1k', 'train',
                                                                       'validation')]


def test_a_failed_write_leaves_no_file(tmp_path):
  with pytest.raises(TypeError):
    build_glue.write_jsonl(str(tmp_path / 'x.jsonl'), [{'a': 1}, {'b': object()}])
  assert os.listdir(tmp_path) == []


def test_missing_glue_files_fail_before_anything_is_written(glue_files, tmp_path):
  with pytest.raises(sources.DataError, match=r'no .*RTE/train\.tsv'):
    build_glue.build(str(tmp_path / 'out'), build_glue.GlueFilesSource(str(tmp_path)),
                     ['rte'], ids=IDS, log=lambda _: None)
  assert not (tmp_path / 'out').exists()


def _mock_glue(self, split, **kwargs):
  """Prepared TFDS GLUE stand-in: rows out of idx order, as TFDS stores them."""
  del kwargs
  config = self.builder_config.name
  names = {'train': 't', 'validation': 'v', 'validation_matched': 'm',
           'validation_mismatched': 'x'}
  rows = [{f: f'{names[split]}{idx} {f}' for f in build_glue.COLUMNS[config].text}
          | {'label': np.float32(idx / 3) if config == 'stsb' else idx % 2, 'idx': idx}
          for idx in (2, 0, 1)]
  return tf.data.Dataset.from_generator(
      lambda: iter(rows), output_signature=self.info.features.get_tensor_spec())


def test_tfds_source_reads_prepared_glue_in_idx_order(tmp_path):
  source = build_glue.TfdsSource(str(tmp_path / 'tfds'))
  with tfds.testing.mock_data(as_dataset_fn=_mock_glue):
    written = build_glue.build(str(tmp_path / 'out'), source, ['stsb', 'mnli'],
                               ids={'stsb': [1], 'mnli_mismatched': [2, 0]}, log=lambda _: None)
  assert len(written) == 7  # stsb: 3 files; mnli: train, 2 validations, 1 sample
  assert _read(tmp_path / 'out' / 'stsb.validation.jsonl') == [
      {'sentence1': f'v{i} sentence1', 'sentence2': f'v{i} sentence2',
       'label': float(np.float32(i / 3)), 'idx': i} for i in range(3)]
  assert [(r['premise'], r['label']) for r in _read(
      tmp_path / 'out' / 'mnli_mismatched.paper1k.jsonl')] == [('x2 premise', 0),
                                                               ('x0 premise', 0)]
  assert _read(tmp_path / 'out' / 'mnli.train.jsonl')[1]['hypothesis'] == 't1 hypothesis'


def test_unprepared_tfds_is_one_line_with_the_build_command(tmp_path):
  source = build_glue.TfdsSource(str(tmp_path / 'tfds'))
  with pytest.raises(sources.DataError) as error:
    build_glue.build(str(tmp_path / 'out'), source, ['cola'], log=lambda _: None)
  message = str(error.value)
  assert '\n' not in message and 'glue/cola:2.0.0 is not prepared' in message
  assert f'`tfds build glue/cola --data_dir={tmp_path / "tfds"}`' in message
  assert not (tmp_path / 'out').exists()


def test_the_cli_exits_with_the_error_line(tmp_path):
  with pytest.raises(SystemExit) as exit_:  # what `main` does with a user's error
    cli.run_or_exit(lambda: build_glue.build(
        str(tmp_path / 'out'), build_glue.TfdsSource(str(tmp_path)), ['sst2']))
  assert str(exit_.value.code).startswith('error: TFDS dataset glue/sst2:2.0.0 is not prepared')


def test_unknown_task_is_named():
  with pytest.raises(ValueError, match="unknown GLUE task 'sts'"):
    build_glue.stems(['sst2', 'sts'])
  assert build_glue.stems(['mnli', 'mnli_matched']) == ['mnli', 'mnli_matched',
                                                         'mnli_mismatched']


def test_local_twin_without_its_files_names_them_and_the_build_command(tmp_path):
  for split, expected in [('validation', 'sst2.validation.jsonl'),
                          ('paper1k', 'sst2.paper1k.jsonl')]:
    with pytest.raises(sources.DataError) as error:
      glue.local_eval_tasks(str(tmp_path), split=split, prefix='nothing_')
    message = str(error.value)
    assert '\n' not in message and expected in message
    assert f'`python -m freelm_jax.build_glue --glue_dir={tmp_path}`' in message
    (tmp_path / 'sst2.validation.jsonl').write_text('{}\n')  # the next split's turn
  assert glue.build_command(glue.DEFAULT_GLUE_DIR) == 'python -m freelm_jax.build_glue'


def test_shipped_paper1k_ids_are_the_authors_samples():
  if not SHARED_GLUE.is_dir():
    pytest.skip('../shared/data/glue is absent')
  shared = {p.name.split('.')[0]: [r['idx'] for r in _read(p)]
            for p in SHARED_GLUE.glob('*.paper1k.jsonl')}
  assert build_glue.paper1k_ids() == shared
