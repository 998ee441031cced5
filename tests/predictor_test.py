"""Predictor, KV-cache decoding, checkpoint fitting and the score CLI (no torch needed)."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freelm_jax.common import errors
from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.inference import predictor as predictor_lib
from freelm_jax.inference import tokenizer_files
from freelm_jax.interop import hf_format
from freelm_jax.interop import operative_config
from freelm_jax.interop import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_VOCAB = os.path.join(REPO, 'tasks', 'data', 'opinions')
CONFIG = network.ModelConfig(vocab_size=8192, num_layers=2, d_model=32, num_heads=4,
                             max_len=32, head_labels=(2, 5))


@functools.lru_cache
def random_params(config=CONFIG, seed=0):
  """An initialised network with every tensor (biases, norms too) perturbed
  (cached: callers must not modify it)."""
  init = jax.jit(lambda rng: network.FreeLM(config).init(
      rng, jnp.zeros((1, 8), jnp.int32), method=network.FreeLM.init_all))
  params = nn.meta.unbox(init(jax.random.key(seed))['params'])
  rng = np.random.RandomState(seed)
  return jax.tree.map(
      lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(np.float32), params)


@pytest.fixture(scope='module')
def predictor():
  tokenizer = tokenizer_files.load_tokenizer(DEMO_VOCAB)
  return predictor_lib.Predictor(CONFIG, random_params(), tokenizer=tokenizer, batch_size=4)


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  """Our random network written in the GPT-2 / FreeLM layout, with the demo vocab."""
  path = str(tmp_path_factory.mktemp('hf'))
  hf_format.save_hf(path, random_params(), CONFIG, DEMO_VOCAB)
  return path


def test_cached_decoding_gives_the_logits_of_a_full_forward_pass(predictor):
  tokens = np.array([[5, 9, 200, 7, 31, 8, 77]], np.int32)
  full = predictor.logits(tokens)[0]
  module = network.FreeLM(predictor.config, decode=True)
  cache = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((1, 10), jnp.int32), jnp.zeros((1, 10), jnp.int32)))['cache'])
  step = lambda cache, t, p: module.apply(
      {'params': predictor.params, 'cache': cache}, t, p,
      method=lambda m, t, p: m.lm_logits(m(t, p)), mutable=['cache'])
  prefill, variables = step(cache, tokens[:, :4], jnp.arange(4)[None])
  np.testing.assert_allclose(prefill[0], full[:4], atol=1e-4)
  cache = variables['cache']
  for i in range(4, 7):
    logits, variables = step(cache, tokens[:, i:i + 1], jnp.array([[i]]))
    cache = variables['cache']
    np.testing.assert_allclose(logits[0, 0], full[i], atol=1e-4)


@pytest.mark.parametrize('sampling', [dict(temperature=0.0),
                                      dict(temperature=0.8, top_k=20, top_p=0.9, seed=3)])
def test_generation_with_the_kv_cache_equals_generation_without(predictor, sampling):
  prompt = [5, 9, 200, 7]
  cached = predictor.generate(prompt, max_new_tokens=12, **sampling)
  uncached = predictor.generate(prompt, max_new_tokens=12, use_cache=False, **sampling)
  assert cached == uncached
  if predictor.eos_id not in cached:
    assert len(cached) == 12


def test_greedy_generation_follows_the_argmax_of_the_logits(predictor):
  prompt = [5, 9, 200, 7]
  new = predictor.generate(prompt, max_new_tokens=3, temperature=0.0)
  sequence = prompt + new
  logits = predictor.logits([sequence])[0]
  expected = [int(np.argmax(logits[len(prompt) + i - 1])) for i in range(len(new))]
  assert new == expected


def test_generate_rejects_a_prompt_longer_than_the_context(predictor):
  with pytest.raises(ValueError, match='context'):
    predictor.generate(list(range(1, 30)), max_new_tokens=10)


def test_truth_probability_is_read_at_cls_and_ignores_padding(predictor):
  rows = [[5, 9, 200, 2, 7, 3], [11, 12, 2, 13, 14, 15, 16, 3]]
  p = predictor.truth_probability(rows)
  padded = np.zeros((2, 12), np.int32)  # the demo vocab's [pad] is 0
  for i, row in enumerate(rows):
    padded[i, :len(row)] = row
  np.testing.assert_allclose(predictor.truth_probability(padded), p, atol=1e-6)
  np.testing.assert_allclose(predictor.truth_probability(padded, lengths=[6, 8]), p, atol=1e-6)
  direct = objectives.truth_probability(predictor.module, predictor.params,
                                    jnp.asarray(padded), jnp.array([6, 8]))
  np.testing.assert_allclose(direct, p, atol=1e-6)
  assert np.all((p > 0) & (p < 1))


def test_tokenizer_matches_the_seqio_vocabulary():
  from tasks import vocabulary  # pylint: disable=g-import-not-at-top
  ours = tokenizer_files.load_tokenizer(DEMO_VOCAB)
  theirs = vocabulary.BPEVocabulary(os.path.join(DEMO_VOCAB, 'vocab.json'),
                                    os.path.join(DEMO_VOCAB, 'merges.txt'))
  text = 'ward: a district[sep]A ward is a kind of district.[cls]'
  assert ours.encode(text).ids == list(theirs.encode(text))
  assert ours.get_vocab_size() == theirs.vocab_size


def test_text_scoring_and_classify_agree_with_token_scoring(predictor):
  instance, propositions = 'a cat sat', {'yes': 'A cat is an animal.', 'no': 'A cat is a tool.'}
  ids = [predictor.encode_proposition(instance, t) for t in propositions.values()]
  assert ids[0][-1] == predictor.cls_id and predictor.sep_id in ids[0]
  expected = predictor.truth_probability(ids)
  from_text = predictor.truth_probability_text(
      [f'{instance} [sep] {t} [cls]' for t in propositions.values()])
  np.testing.assert_allclose(from_text, expected, atol=1e-6)
  label, probabilities = predictor.classify(instance, propositions)
  np.testing.assert_allclose(list(probabilities.values()), expected, atol=1e-6)
  assert label == max(probabilities, key=probabilities.get)
  assert isinstance(predictor.generate('a cat', max_new_tokens=4, temperature=0.0), str)


def test_long_propositions_are_cut_like_the_training_pipeline(predictor):
  ids = predictor.encode_proposition('word ' * 40, 'a short proposition')
  assert len(ids) == CONFIG.max_len
  assert ids[-1] == predictor.cls_id
  assert ids[-2 - len(predictor.encode('a short proposition'))] == predictor.sep_id


def test_hf_layout_round_trips_exactly(hf_dir):
  checkpoint = weights.load(hf_dir)
  assert checkpoint.has_teacher_head and checkpoint.config.head_labels == (2, 5)
  original = random_params()
  jax.tree.map(np.testing.assert_array_equal, checkpoint.params, original)
  with open(os.path.join(hf_dir, 'config.json')) as f:
    assert json.load(f)['num_multi_task_labels'] == '2,5'


def test_model_config_is_read_from_an_operative_gin_file(tmp_path):
  path = tmp_path / 'config.gin'
  path.write_text(
      'from freelm_jax import train_lib\nimport tasks\n\nVOCAB_SIZE = 97\nTYPES = %N\nN = 6\n'
      'ModelConfig.vocab_size = %VOCAB_SIZE\nModelConfig.num_layers = 2\n'
      'ModelConfig.d_model = 32\nModelConfig.num_heads = 4\nModelConfig.max_len = 16\n'
      "ModelConfig.head_labels = (2, %TYPES)\nModelConfig.dtype = 'bfloat16'\n"
      'train_lib.train.model_config = @network.ModelConfig()\n')
  config = operative_config.model_config_from_gin(str(path))
  assert config == network.ModelConfig(97, 2, 32, 4, 16, head_labels=(2, 6), dtype='bfloat16')
  path.write_text(operative_config.model_config_to_gin(CONFIG, 'a comment'))
  assert operative_config.model_config_from_gin(str(path)) == CONFIG


def test_init_from_grows_the_vocabulary_cuts_the_context_and_keeps_a_new_head(hf_dir):
  checkpoint = weights.load(hf_dir)
  checkpoint.has_teacher_head = False  # as for a plain GPT-2
  target_config = dataclasses.replace(CONFIG, vocab_size=8195, max_len=16,
                                      head_labels=(2, 8), scan_layers=False)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(network.FreeLM(target_config).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32), method=network.FreeLM.init_all)))
  target = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes['params'])
  fitted = weights.fit_checkpoint(checkpoint, target, target_config)
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), fitted, target)
  wte = fitted['wte']['embedding']
  np.testing.assert_array_equal(wte[:8192], checkpoint.params['wte']['embedding'])
  np.testing.assert_allclose(wte[8192:], np.broadcast_to(wte[:8192].mean(0), (3, 32)), atol=1e-6)
  np.testing.assert_array_equal(fitted['wpe']['embedding'],
                                checkpoint.params['wpe']['embedding'][:16])
  np.testing.assert_array_equal(fitted['head'], target['head'])
  np.testing.assert_array_equal(fitted['decoder']['layers_1']['mlp']['fc']['kernel'],
                                checkpoint.params['decoder']['layers']['mlp']['fc']['kernel'][1])
  target['decoder']['ln_f']['scale'] = np.ones(64, np.float32)
  with pytest.raises(errors.CheckpointError, match='ln_f/scale.*shape'):
    weights.fit_checkpoint(checkpoint, target, target_config)


@pytest.mark.parametrize('modules', ['Predictor, score', 'convert'])
def test_predictor_and_clis_import_neither_tensorflow_nor_seqio(modules):
  code = (f'import sys; from freelm_jax import {modules}; '
          'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio")))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=REPO).stdout.strip()
  assert out == '[]'


def _score(args, cwd):
  return subprocess.run([sys.executable, '-m', 'freelm_jax.score', *args],
                        capture_output=True, text=True, cwd=cwd,
                        env=dict(os.environ, PYTHONPATH=REPO))


def test_score_cli_writes_one_prediction_per_line(hf_dir, tmp_path):
  rows = [{'id': i, 'instance': f'a cat number {i}',
           'propositions': {'yes': 'A cat is an animal.', 'no': 'A cat is a tool.',
                            'maybe': f'It is {i}.'}} for i in range(5)]
  rows.append({'instance': 'list form', 'propositions': ['one', 'two']})
  source = tmp_path / 'in.jsonl'
  source.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  output = tmp_path / 'out.jsonl'
  result = _score([f'--model={hf_dir}', f'--input={source}', f'--output={output}',
                   '--batch_size=4'], tmp_path)
  assert result.returncode == 0, result.stderr
  predictions = [json.loads(line) for line in output.read_text().splitlines()]
  assert [p.get('id') for p in predictions] == [0, 1, 2, 3, 4, None]
  for p in predictions:
    probabilities = p['probabilities']
    assert set(probabilities) == ({'yes', 'no', 'maybe'} if 'id' in p else {'0', '1'})
    assert str(p['prediction']) == max(probabilities, key=probabilities.get)
  predictor = predictor_lib.Predictor.from_pretrained(hf_dir)
  expected = predictor.classify(rows[2]['instance'], rows[2]['propositions'])[1]
  np.testing.assert_allclose(list(predictions[2]['probabilities'].values()),
                             list(expected.values()), atol=1e-5)


def test_score_cli_names_the_bad_line_and_writes_nothing(hf_dir, tmp_path):
  source = tmp_path / 'in.jsonl'
  source.write_text('{"instance": "a", "propositions": {"0": "b"}}\n\n'
                    '{"instance": "a", "propositions": "not a mapping"}\n')
  output = tmp_path / 'out.jsonl'
  result = _score([f'--model={hf_dir}', f'--input={source}', f'--output={output}'], tmp_path)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith(f'error: {source}:3: ')
  assert not output.exists()
