"""Hugging Face GPT-2 and the official FreeLM layout against PyTorch references.

References are built with the installed transformers/torch (CPU, float32); the
tests skip when either is absent.
"""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# pylint: disable=g-import-not-at-top,wrong-import-position
from freelm_jax import Predictor
from freelm_jax.common import errors
from freelm_jax.core import checkpoints
from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.core import partitioning
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.interop import hf_format
from freelm_jax.interop import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_VOCAB = os.path.join(REPO, 'tasks', 'data', 'opinions')
VOCAB, CONTEXT, D_MODEL = 101, 24, 32


def tiny_gpt2(seed: int = 0):
  """A random GPT2LMHeadModel; every tensor is perturbed so biases and norms count."""
  torch.manual_seed(seed)
  config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=CONTEXT, n_embd=D_MODEL,
                                   n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def random_tokens(seed: int, shape=(3, 13)) -> np.ndarray:
  return np.random.RandomState(seed).randint(1, VOCAB, shape).astype(np.int32)


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope='module')
def hf_gpt2(tmp_path_factory):
  model = tiny_gpt2()
  path = str(tmp_path_factory.mktemp('gpt2'))
  model.save_pretrained(path)  # config.json + model.safetensors
  return model, path


@pytest.fixture(scope='module')
def freelm_layout(tmp_path_factory):
  """The official FreeLM layout in pytorch_model.bin, and its torch reference."""
  model = tiny_gpt2(seed=1)
  torch.manual_seed(2)
  mtc_head = torch.randn(2, D_MODEL, 3)  # (heads, d_model, max_labels): labels "2,3"
  path = str(tmp_path_factory.mktemp('freelm'))
  state = dict(model.state_dict(), **{'mtc_head.weight': mtc_head})
  state['lm_head.weight'] = model.transformer.wte.weight.detach().clone()
  torch.save(state, os.path.join(path, 'pytorch_model.bin'))
  config = model.config.to_dict()
  config.update(num_multi_task_labels='2,3', architectures=['FreeLMModel'])
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config, f)

  def truth_probability(tokens, lengths):
    """FreeLM's forward_for_mtc with tid 0 and its README's reading: the
    softmax over head 0's whole row at [cls], index 1."""
    with torch.no_grad():
      hidden = model.transformer(torch.tensor(tokens, dtype=torch.long)).last_hidden_state
      cls = hidden[torch.arange(len(tokens)), torch.tensor(lengths) - 1]
      logits = torch.einsum('bd,tdn->btn', cls, mtc_head)[:, 0]
      return torch.softmax(logits, -1)[:, 1].numpy()

  return model, path, truth_probability


def test_gpt2_logits_match_transformers(hf_gpt2):
  model, path = hf_gpt2
  predictor = Predictor.from_pretrained(path)
  assert not predictor.has_teacher_head
  tokens = random_tokens(0)
  np.testing.assert_allclose(predictor.logits(tokens), torch_logits(model, tokens),
                             atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match='teacher head'):
    predictor.truth_probability(tokens)


def test_greedy_generation_matches_transformers(hf_gpt2):
  model, path = hf_gpt2
  prompt = [5, 17, 3, 99]
  ours = Predictor.from_pretrained(path).generate(prompt, max_new_tokens=8, temperature=0.0)
  with torch.no_grad():
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
  assert ours == theirs[0, len(prompt):].tolist()


def test_freelm_layout_matches_the_torch_reference(freelm_layout):
  model, path, truth_probability = freelm_layout
  predictor = Predictor.from_pretrained(path)
  assert predictor.config.head_labels == (2, 3)
  assert predictor.config.head_reading == 'official'
  tokens = random_tokens(1, (4, 11))
  np.testing.assert_allclose(predictor.logits(tokens), torch_logits(model, tokens),
                             atol=1e-4, rtol=0)
  lengths = [11, 7, 3, 9]
  expected = truth_probability(tokens, lengths)
  padded = tokens.copy()
  for row, n in zip(padded, lengths):
    row[n:] = 0  # no tokenizer here: [pad] defaults to id 0
  np.testing.assert_allclose(predictor.truth_probability(tokens, lengths), expected, atol=1e-4)
  np.testing.assert_allclose(predictor.truth_probability(padded), expected, atol=1e-4)


def test_export_is_a_gpt2_that_transformers_loads_and_import_round_trips(
    freelm_layout, tmp_path):
  _, path, _ = freelm_layout
  checkpoint = weights.load(path)
  exported = str(tmp_path / 'exported')
  hf_format.save_hf(exported, checkpoint.params, checkpoint.config)
  reloaded = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
  tokens = random_tokens(2)
  np.testing.assert_allclose(torch_logits(reloaded, tokens),
                             Predictor.from_pretrained(path).logits(tokens), atol=1e-4, rtol=0)
  again = weights.load(exported)
  assert again.config == checkpoint.config and again.has_teacher_head
  assert again.config.head_reading == 'official'  # kept in config.json
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal, again.params, checkpoint.params)


def test_our_exports_record_their_head_reading(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  config = network.ModelConfig(vocab_size=VOCAB, num_layers=1, d_model=D_MODEL, num_heads=4,
                               max_len=CONTEXT, head_labels=(2, 3))
  shapes = nn.meta.unbox(jax.eval_shape(functools.partial(
      network.FreeLM(config).init, method=network.FreeLM.init_all),
      jax.random.key(0), np.zeros((1, 4), np.int32))['params'])
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)  # the shapes suffice
  for reading in network.HEAD_READINGS:
    path = str(tmp_path / reading)
    hf_format.save_hf(path, params, dataclasses.replace(config, head_reading=reading))
    assert weights.load(path).config.head_reading == reading
  with open(os.path.join(path, 'config.json')) as f:
    hf = json.load(f)
  with pytest.raises(errors.CheckpointError, match='freelm_jax_head_reading'):
    hf_format.config_from_hf(dict(hf, freelm_jax_head_reading='two_logits'), path)


def test_official_checkpoint_as_a_model_dir_is_scored_over_head_0s_row(freelm_layout, tmp_path):
  """`convert` to a model_dir keeps the reading for the predictor and for
  evaluation (the eval CLI parses config.gin; its scores are `Trainer.score`)."""
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from freelm_jax import convert  # pylint: disable=g-import-not-at-top
  from freelm_jax.config import settings  # pylint: disable=g-import-not-at-top
  from freelm_jax.training import runner
  _, path, truth_probability = freelm_layout
  checkpoint = weights.load(path)
  model_dir = str(tmp_path / 'model_dir')
  convert.write_model_dir(model_dir, checkpoint, checkpoint.config, 0, path)
  tokens, lengths = random_tokens(4, (4, 11)), np.array([11, 6, 2, 9], np.int32)
  expected = truth_probability(tokens, lengths)
  predictor = Predictor.from_pretrained(model_dir)
  np.testing.assert_allclose(predictor.truth_probability(tokens, lengths), expected, atol=1e-4)
  gin.clear_config(clear_constants=True)
  try:
    gin.parse_config_file(os.path.join(model_dir, 'config.gin'))
    config = settings.ModelConfig()
  finally:
    gin.clear_config(clear_constants=True)
  assert config.head_reading == 'official'
  optimizer, schedule = trainer_lib.create_optimizer(1e-3, 10)
  trainer = trainer_lib.Trainer(network.FreeLM(config), optimizer, schedule,
                                {'teacher': objectives.TeacherObjective()},
                                partitioning.create_mesh(1, 1, 1, devices=jax.devices()[:1]))
  np.testing.assert_allclose(trainer.score(predictor.params, tokens, lengths), expected,
                             atol=1e-4)


def test_convert_cli_imports_gpt2_into_a_model_dir_training_can_resume(hf_gpt2, tmp_path):
  _, path = hf_gpt2
  source = str(tmp_path / 'gpt2')
  subprocess.run(['cp', '-r', path, source], check=True)
  for name in ('vocab.json', 'merges.txt'):  # the demo vocab has 8192 tokens
    subprocess.run(['cp', os.path.join(DEMO_VOCAB, name), source], check=True)
  with open(os.path.join(source, 'config.json')) as f:
    config = json.load(f)
  target = str(tmp_path / 'model_dir')
  result = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.convert', f'--input={path}', f'--output={target}',
       '--head_labels=2,5', f'--vocab_dir={source}'],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr
  assert not os.path.exists(target + '.converting')
  ours = Predictor.from_pretrained(target)
  assert ours.config.vocab_size == 8192 and ours.config.head_labels == (2, 5)
  assert ours.tokenizer is not None and config['vocab_size'] == VOCAB
  tokens = random_tokens(3)
  np.testing.assert_allclose(ours.logits(tokens)[..., :VOCAB],
                             Predictor.from_pretrained(path).logits(tokens), atol=1e-5)
  # The step-0 train state restores onto a Trainer of the same shape.
  trainer = make_trainer(ours.config)
  state, _ = checkpoints.restore(checkpoints.create_manager(target, 1), trainer.abstract_state())
  assert int(state.step) == 0
  np.testing.assert_array_equal(np.asarray(state.params['wpe']['embedding']),
                                np.asarray(ours.params['wpe']['embedding']))
  again = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.convert', f'--input={path}', f'--output={target}'],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert again.returncode != 0 and again.stderr.strip().endswith('already exists.')


def make_trainer(config: network.ModelConfig) -> trainer_lib.Trainer:
  optimizer, schedule = trainer_lib.create_optimizer(1e-3, 10)
  return trainer_lib.Trainer(network.FreeLM(config), optimizer, schedule,
                             {'lm': objectives.LanguageObjective()},
                             partitioning.create_mesh(-1, 1, 1))


def test_init_from_starts_a_new_run_from_gpt2_weights(hf_gpt2, tmp_path):
  model, path = hf_gpt2
  config = network.ModelConfig(vocab_size=VOCAB + 3, num_layers=2, d_model=D_MODEL,
                               num_heads=4, max_len=16, head_labels=(2, 5))
  trainer = make_trainer(config)
  manager = checkpoints.create_manager(str(tmp_path / 'run'), 1)
  from freelm_jax.training import lifecycle  # pylint: disable=g-import-not-at-top
  state, facts = lifecycle.restore_or_init(trainer, manager, 0, init_from=path)
  assert facts == {} and int(state.step) == 0
  wte = np.asarray(state.params['wte']['embedding'])
  np.testing.assert_array_equal(wte[:VOCAB], model.transformer.wte.weight.detach().numpy())
  np.testing.assert_allclose(wte[VOCAB:], np.tile(wte[:VOCAB].mean(0), (3, 1)), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(state.params['wpe']['embedding']),
                                model.transformer.wpe.weight.detach().numpy()[:16])
  head = np.asarray(state.params['head'])  # GPT-2 has none: the fresh N(0, 0.02) init stays
  assert head.shape == (2, D_MODEL, 5) and 0.015 < head.std() < 0.025
  assert state.params['wte']['embedding'].sharding == trainer.state_sharding.params['wte'][
      'embedding']


# --- [sep]/[cls]: added tokens or plain text, decided from the checkpoint ------

GPT2_DIR = os.path.join(REPO, 'tasks', 'data', 'gpt2')
PROPOSITIONS = [
    "i can tell you that there's no other reason to remember it. [sep] Here, the movie "
    'review is emotionally negative. [cls]',
    'A great film! [sep] Here, the movie review is emotionally positive. [cls]',
    'The cat sat. [sep] The text means the same as: a cat was sitting. [cls]',
]


def official_freelm(path: str, vocab_size: int, added_markers: bool,
                    tokenizer_json: bool = False) -> tuple:
  """A random FreeLM-layout checkpoint with GPT-2's vocabulary as a 2023
  `save_pretrained` wrote it (vocab.json, merges.txt; with `added_markers`
  also added_tokens.json and special_tokens_map.json), or with
  `tokenizer_json` as today's transformers writes it (tokenizer.json)."""
  torch.manual_seed(3)
  config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=D_MODEL,
                                   n_layer=2, n_head=4)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  mtc_head = torch.randn(2, D_MODEL, 3)
  torch.save(dict(model.state_dict(), **{'mtc_head.weight': mtc_head}),
             os.path.join(path, 'pytorch_model.bin'))
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(dict(config.to_dict(), num_multi_task_labels='2,3'), f)
  for name in ('vocab.json', 'merges.txt'):
    subprocess.run(['cp', os.path.join(GPT2_DIR, name), path], check=True)
  if added_markers:
    with open(os.path.join(path, 'added_tokens.json'), 'w') as f:
      json.dump({'[sep]': 50257, '[cls]': 50258}, f)
    with open(os.path.join(path, 'special_tokens_map.json'), 'w') as f:
      json.dump({'eos_token': '<|endoftext|>', 'additional_special_tokens': ['[sep]', '[cls]']}, f)
  if tokenizer_json:
    transformers.GPT2Tokenizer.from_pretrained(path).save_pretrained(path)
    for name in ('vocab.json', 'merges.txt', 'added_tokens.json', 'special_tokens_map.json'):
      if os.path.exists(os.path.join(path, name)):
        os.remove(os.path.join(path, name))
    assert os.path.exists(os.path.join(path, 'tokenizer.json'))

  def p_true(texts):
    """FreeLM's README: GPT2Tokenizer from the checkpoint dir, forward_for_mtc head 0."""
    tokenizer = transformers.GPT2Tokenizer.from_pretrained(path)
    return _reference_p_true(model, mtc_head, tokenizer, texts), tokenizer

  return path, p_true


def _reference_p_true(model, mtc_head, tokenizer, texts) -> np.ndarray:
  out = []
  with torch.no_grad():
    for text in texts:  # one at a time: no padding in the reference
      ids = torch.tensor([tokenizer(text)['input_ids']])
      cls = model.transformer(ids).last_hidden_state[0, -1]
      logits = torch.einsum('d,tdn->tn', cls, mtc_head)[0]  # head 0's whole row
      out.append(torch.softmax(logits, -1)[1].item())
  return np.array(out)


@pytest.mark.parametrize('added_markers,tokenizer_json', [
    (True, False), (False, False), (True, True)],
    ids=['added_tokens', 'plain_text', 'added_tokens_in_tokenizer_json'])
def test_official_freelm_markers_follow_the_checkpoint(tmp_path, added_markers, tokenizer_json):
  path, p_true = official_freelm(str(tmp_path), 50259 if added_markers else 50257,
                                 added_markers, tokenizer_json)
  expected, tokenizer = p_true(PROPOSITIONS)
  predictor = Predictor.from_pretrained(path, batch_size=2)  # two batches, one padded
  assert predictor.markers_as_text
  assert (predictor.sep_id, predictor.cls_id) == ((50257, 50258) if added_markers else (None, None))
  for text in PROPOSITIONS:
    instance, _, proposition = text.partition(' [sep] ')
    assert predictor.encode_proposition(instance, proposition[:-len(' [cls]')]) == tokenizer(
        text)['input_ids']
  np.testing.assert_allclose(predictor.truth_probability_text(PROPOSITIONS), expected, atol=1e-4)
  positive = PROPOSITIONS[0].replace('negative', 'positive')
  _, probabilities = predictor.classify(PROPOSITIONS[0].split(' [sep] ')[0], {
      'negative': 'Here, the movie review is emotionally negative.',
      'positive': 'Here, the movie review is emotionally positive.'})
  np.testing.assert_allclose([probabilities['negative'], probabilities['positive']],
                             [expected[0], p_true([positive])[0][0]], atol=1e-4)


def test_markers_declared_but_missing_from_the_embedding_is_one_clear_error(tmp_path):
  path, _ = official_freelm(str(tmp_path), 50257, added_markers=True)
  with pytest.raises(errors.CheckpointError, match=r'\[sep\] token id 50257, but the token '
                     r'embedding has 50257 rows'):
    Predictor.from_pretrained(path)


def test_gpt2_checkpoint_without_tokenizer_files_gets_the_shipped_vocabulary(tmp_path):
  path, _ = official_freelm(str(tmp_path), 50260, added_markers=False)
  for name in ('vocab.json', 'merges.txt'):
    os.remove(os.path.join(path, name))
  predictor = Predictor.from_pretrained(path)  # 50260 rows: our appended [sep] [cls] [pad]
  assert predictor.encode('Hello world') == [15496, 995]
  assert (predictor.sep_id, predictor.cls_id, predictor.pad_id) == (50257, 50258, 50259)
  assert not predictor.markers_as_text
