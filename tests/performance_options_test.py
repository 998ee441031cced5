"""The GPU performance options keep the numerics: attention implementation,
padded vocabulary, chunked cross-entropy and packed teacher batches."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.core import packing
from freelm_jax.interop import hf_format

CONFIG = network.ModelConfig(vocab_size=97, num_layers=1, d_model=32,
                             num_heads=4, max_len=32, head_labels=(2, 5))


def _init(config=CONFIG, seed=0):
  module = network.FreeLM(config)
  params = module.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32),
                       method=network.FreeLM.init_all)['params']
  return module, nn.meta.unbox(params)


def _lm_batch(B=2, T=16, seed=1):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CONFIG.vocab_size, (B, T + 1)).astype(np.int32)
  segment_ids = np.array([[1] * 6 + [2] * 7 + [0] * 3, [1] * 16])[:B]
  positions = np.array([list(range(6)) + list(range(7)) + [0] * 3, list(range(16))])[:B]
  return {'tokens': tokens[:, :-1], 'targets': tokens[:, 1:], 'positions': positions,
          'segment_ids': segment_ids, 'weights': (segment_ids > 0).astype(np.float32)}


def _loss_and_grads(objective, module, params, batch):
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: objective.loss(module, p, batch), has_aux=True))(params)
  return loss, metrics, grads


def _assert_trees_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5), a, b)


# --- attention implementation ---------------------------------------------


def _reference_attention(x_BTD, attn_params, mask_B1TS, num_heads):
  """Plain einsum softmax attention with GPT-2's parameters."""
  proj = lambda n: jnp.einsum('btd,dhk->bthk', x_BTD, attn_params[n]['kernel']) + \
      attn_params[n]['bias']
  q, k, v = proj('query'), proj('key'), proj('value')
  scores = jnp.einsum('bthk,bshk->bhts', q, k) / np.sqrt(q.shape[-1])
  weights = jax.nn.softmax(jnp.where(mask_B1TS, scores, -1e30), axis=-1)
  out = jnp.einsum('bhts,bshk->bthk', weights, v)
  return jnp.einsum('bthk,hkd->btd', out, attn_params['out']['kernel']) + \
      attn_params['out']['bias']


def test_xla_attention_equals_plain_einsum_attention_with_packed_segments():
  attention = network.Attention(CONFIG)
  x = jax.random.normal(jax.random.key(0), (2, 16, CONFIG.d_model))
  mask = network.attention_mask(jnp.asarray(_lm_batch()['segment_ids']))
  params = nn.meta.unbox(attention.init(jax.random.key(1), x, mask)['params'])
  weigh = lambda out_BTD: (out_BTD.sum(-1) * jnp.arange(16.)).sum()
  ours = lambda p, x: weigh(attention.apply({'params': p}, x, mask))
  ref = lambda p, x: weigh(_reference_attention(x, p, mask, CONFIG.num_heads))
  np.testing.assert_allclose(attention.apply({'params': params}, x, mask),
                             _reference_attention(x, params, mask, CONFIG.num_heads),
                             atol=1e-5)
  _assert_trees_close(jax.grad(ours, argnums=(0, 1))(params, x),
                      jax.grad(ref, argnums=(0, 1))(params, x), atol=1e-4)


def test_cudnn_attention_needs_bfloat16_and_fails_in_one_line_off_gpu():
  with pytest.raises(ValueError, match="attention_impl='cudnn': needs dtype 'bfloat16' or 'float16', not "
                     "ModelConfig.dtype='float32'"):
    dataclasses.replace(CONFIG, attention_impl='cudnn')
  with pytest.raises(ValueError, match="must be 'xla' or 'cudnn'"):
    dataclasses.replace(CONFIG, attention_impl='flash')
  if jax.default_backend() == 'gpu':
    pytest.skip('cuDNN is available here')
  module, params = _init()
  cudnn = network.FreeLM(dataclasses.replace(CONFIG, attention_impl='cudnn', dtype='bfloat16'))
  with pytest.raises(ValueError, match="needs an NVIDIA GPU; this backend is 'cpu'"):
    cudnn.apply({'params': params}, jnp.zeros((1, 8), jnp.int32))


# --- padded vocabulary -------------------------------------------------------


def _padded(config=CONFIG, multiple=128):
  """The padded model with the unpadded one's rows, and random extra rows."""
  module, params = _init(config)
  padded_config = dataclasses.replace(config, vocab_pad_multiple=multiple)
  padded_module, padded_params = _init(padded_config, seed=7)
  padded_params = dict(params, wte={'embedding': padded_params['wte']['embedding']
                                    .at[:config.vocab_size].set(params['wte']['embedding'])})
  return module, params, padded_module, padded_params


def test_padded_vocabulary_gives_the_same_loss_and_gradients():
  module, params, padded_module, padded_params = _padded()
  assert padded_params['wte']['embedding'].shape == (128, CONFIG.d_model)
  objective, batch = objectives.LanguageObjective(), _lm_batch()
  loss, metrics, grads = _loss_and_grads(objective, module, params, batch)
  p_loss, p_metrics, p_grads = _loss_and_grads(objective, padded_module, padded_params, batch)
  np.testing.assert_allclose(p_loss, loss, rtol=1e-6)
  assert p_metrics['accuracy'] == metrics['accuracy']
  p_wte = p_grads['wte']['embedding']
  np.testing.assert_array_equal(p_wte[CONFIG.vocab_size:], 0)
  p_grads['wte']['embedding'] = p_wte[:CONFIG.vocab_size]
  _assert_trees_close(p_grads, grads, atol=1e-6)


def test_padded_logits_never_win():
  _, _, padded_module, padded_params = _padded()
  padded_params['wte']['embedding'] = padded_params['wte']['embedding'].at[
      CONFIG.vocab_size:].set(100.0)  # would win every argmax if not masked
  logits = padded_module.apply({'params': padded_params}, jnp.arange(8)[None],
                               method=lambda m, t: m.lm_logits(m(t)))
  assert logits.shape[-1] == 128
  assert int(jnp.argmax(logits, -1).max()) < CONFIG.vocab_size


def test_export_drops_padded_rows_and_import_pads_them():
  config = dataclasses.replace(CONFIG, vocab_pad_multiple=128)
  _, params = _init(config)
  tensors = hf_format.params_to_hf(params, config)
  assert tensors['transformer.wte.weight'].shape == (CONFIG.vocab_size, CONFIG.d_model)
  assert tensors['lm_head.weight'].shape == (CONFIG.vocab_size, CONFIG.d_model)
  back = hf_format.params_from_hf(tensors, config)
  assert back['wte']['embedding'].shape == (128, CONFIG.d_model)
  np.testing.assert_array_equal(back['wte']['embedding'][:CONFIG.vocab_size],
                                params['wte']['embedding'][:CONFIG.vocab_size])
  again = hf_format.params_to_hf(back, config)
  for name, value in tensors.items():
    np.testing.assert_array_equal(again[name], value)


# --- chunked cross-entropy ----------------------------------------------------


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_chunked_cross_entropy_equals_the_whole_one(dtype):
  config = dataclasses.replace(CONFIG, dtype=dtype, vocab_pad_multiple=128)
  module, params = _init(config)
  batch = _lm_batch()
  loss, metrics, grads = _loss_and_grads(objectives.LanguageObjective(), module, params, batch)
  c_loss, c_metrics, c_grads = _loss_and_grads(
      objectives.LanguageObjective(logits_chunk=4), module, params, batch)
  np.testing.assert_allclose(c_loss, loss, rtol=1e-6)
  np.testing.assert_allclose(c_metrics['accuracy'], metrics['accuracy'], rtol=1e-6)
  _assert_trees_close(c_grads, grads, atol=1e-6 if dtype == 'float32' else 1e-3)


def test_chunk_that_does_not_divide_the_sequence_is_refused():
  module, params = _init()
  with pytest.raises(ValueError, match='logits_chunk=5 must divide the sequence length 16'):
    objectives.LanguageObjective(logits_chunk=5).loss(module, params, _lm_batch())


def test_lm_batch_without_segment_ids_is_one_segment_per_row():
  module, params = _init()
  batch = dict(_lm_batch(), segment_ids=np.ones((2, 16), np.int32),
               positions=np.tile(np.arange(16), (2, 1)))
  loss, _ = objectives.LanguageObjective().loss(module, params, batch)
  del batch['segment_ids']
  np.testing.assert_allclose(objectives.LanguageObjective().loss(module, params, batch)[0], loss,
                             rtol=1e-6)


# --- packed teacher batches -------------------------------------------------


def _propositions(n=7, width=12, seed=3):
  rng = np.random.default_rng(seed)
  return {'tokens': rng.integers(1, CONFIG.vocab_size, (n, width)).astype(np.int32),
          'lengths': rng.integers(3, width + 1, (n,)).astype(np.int32),
          'truth': rng.integers(0, 2, (n,)).astype(np.int32),
          'task_type': rng.integers(0, 5, (n,)).astype(np.int32),
          'weights': np.array([1, 1, 0, 1, 1, 1, 1][:n], np.float32)}


def test_pack_places_every_proposition_once_with_its_own_positions():
  props = _propositions()
  packed, used = packing.pack(props, rows=3, row_len=24, max_per_row=3)
  assert used == 7
  cls = [(r, k) for r in range(3) for k in range(3) if packed['segment_ids'][r].max() > k]
  assert len(cls) == 7 and packed['weights'].sum() == props['weights'].sum()
  for r, k in cls:
    segment = packed['segment_ids'][r] == k + 1
    n = segment.sum()
    match = [i for i in range(7) if props['lengths'][i] == n and np.array_equal(
        props['tokens'][i, :n], packed['tokens'][r][segment])]
    assert match and packed['cls_index'][r, k] == np.flatnonzero(segment)[-1]
    np.testing.assert_array_equal(packed['positions'][r][segment], np.arange(n))


def test_pack_stops_at_the_first_proposition_that_does_not_fit():
  props = _propositions()
  _, used = packing.pack(props, rows=1, row_len=24, max_per_row=8)
  assert 0 < used < 7
  assert props['lengths'][:used].sum() <= 24 < props['lengths'][:used + 1].sum()
  with pytest.raises(ValueError, match='does not fit a packed row of 5'):
    packing.pack(props, rows=1, row_len=5, max_per_row=2)


def test_packed_teacher_loss_and_gradients_equal_the_unpacked_ones():
  module, params = _init()
  props = _propositions()
  packed, used = packing.pack(props, rows=3, row_len=24, max_per_row=3)
  assert used == 7
  objective = objectives.TeacherObjective()
  loss, metrics, grads = _loss_and_grads(objective, module, params, props)
  p_loss, p_metrics, p_grads = _loss_and_grads(objective, module, params, packed)
  for key in ('loss', 'truth_loss', 'task_type_loss', 'accuracy'):
    np.testing.assert_allclose(p_metrics[key], metrics[key], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p_loss, loss, rtol=1e-5)
  _assert_trees_close(p_grads, grads, atol=1e-5)
  assert objective.num_tokens(packed) == props['lengths'].sum()


def test_packed_batches_keep_stream_order_and_drop_nothing():
  stream = [_propositions(seed=s) for s in range(4)]
  batches = list(packing.packed_batches(stream, rows=2, row_len=24, max_per_row=3))
  tokens_in = [tuple(p['tokens'][i, :p['lengths'][i]]) for p in stream for i in range(7)]
  tokens_out = [tuple(b['tokens'][r][b['segment_ids'][r] == k + 1])
                for b in batches for r in range(2) for k in range(3)
                if b['segment_ids'][r].max() > k]
  # First-fit fills rows out of stream order, but the packed batches hold
  # exactly a prefix of the stream (the rest waits for more propositions).
  assert len(batches) > 1 and 0 < len(tokens_out) < len(tokens_in)
  assert sorted(tokens_out) == sorted(tokens_in[:len(tokens_out)])
