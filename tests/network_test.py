"""Behaviour of the network: causality, packing masks, scan and remat."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freelm_jax.core import network

CONFIG = network.ModelConfig(vocab_size=97, num_layers=2, d_model=32,
                             num_heads=4, max_len=16, head_labels=(2, 5))


def _init(config=CONFIG):
  module = network.FreeLM(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                       method=network.FreeLM.init_all)['params']
  return module, nn.meta.unbox(params)


@functools.partial(jax.jit, static_argnums=0)
def _logits(module, params, tokens, positions=None, segment_ids=None):
  return module.apply({'params': params}, tokens, positions, segment_ids,
                      method=lambda m, *a: m.lm_logits(m(*a)))


def test_gradients_only_flow_from_the_past():
  module, params = _init()
  tokens = jnp.arange(1, 11)[None] % 97
  embed = lambda x: module.apply({'params': params}, tokens, method=lambda m, t: m.wte(t))
  x = embed(tokens)

  def logit_at(x_BTD, t):
    def forward(m, x_BTD):
      h = m.decoder(x_BTD + m.wpe(jnp.arange(10)[None]),
                    network.attention_mask(jnp.ones((1, 10), jnp.int32)))
      return m.lm_logits(h)
    return module.apply({'params': params}, x_BTD, method=forward)[0, t].sum()

  grad_fn = jax.jit(jax.grad(logit_at), static_argnums=1)
  for t in (0, 4, 9):
    grad = grad_fn(x, t)
    norms = jnp.linalg.norm(grad[0], axis=-1)
    assert jnp.all(norms[t + 1:] == 0)
    assert jnp.all(norms[:t + 1] > 0)


def test_packed_segments_do_not_see_each_other():
  module, params = _init()
  a, b = jnp.array([[5, 6, 7, 8]]), jnp.array([[9, 10, 11]])
  packed = jnp.concatenate([a, b], axis=1)
  positions = jnp.array([[0, 1, 2, 3, 0, 1, 2]])
  segments = jnp.array([[1, 1, 1, 1, 2, 2, 2]])
  out = _logits(module, params, packed, positions, segments)
  np.testing.assert_allclose(out[:, :4], _logits(module, params, a), atol=1e-5)
  np.testing.assert_allclose(out[:, 4:], _logits(module, params, b), atol=1e-5)


def test_padding_after_a_row_does_not_change_it():
  module, params = _init()
  tokens = jnp.array([[3, 4, 5, 0, 0, 0]])
  short = _logits(module, params, tokens[:, :3])
  np.testing.assert_allclose(_logits(module, params, tokens)[:, :3], short, atol=1e-5)


@pytest.mark.parametrize('remat_policy', ['none', 'full', 'nothing_saveable'])
def test_scan_and_remat_match_the_unrolled_stack(remat_policy):
  module, params = _init()
  unrolled_cfg = dataclasses.replace(CONFIG, scan_layers=False, remat_policy=remat_policy)
  unrolled = network.FreeLM(unrolled_cfg)
  layers = params['decoder']['layers']
  unrolled_params = dict(params, decoder={
      'ln_f': params['decoder']['ln_f'],
      **{f'layers_{i}': jax.tree.map(lambda x: x[i], layers)
         for i in range(CONFIG.num_layers)}})
  tokens = jnp.array([[1, 2, 3, 4, 5]])
  loss = lambda m, p: _logits(m, p, tokens).sum()
  np.testing.assert_allclose(loss(unrolled, unrolled_params), loss(module, params), rtol=1e-5)
  g_scan = jax.jit(jax.grad(lambda p: loss(module, p)))(params)
  g_unrolled = jax.jit(jax.grad(lambda p: loss(unrolled, p)))(unrolled_params)
  np.testing.assert_allclose(g_unrolled['decoder']['layers_1']['mlp']['fc']['kernel'],
                             g_scan['decoder']['layers']['mlp']['fc']['kernel'][1],
                             rtol=1e-4, atol=1e-6)


def test_gpt2_shapes_and_tied_embedding():
  module, params = _init()
  assert params['wte']['embedding'].shape == (97, 32)
  assert params['wpe']['embedding'].shape == (16, 32)
  assert params['head'].shape == (2, 32, 5)  # (heads, d_model, max_labels)
  assert 'lm_head' not in params  # LM logits use wte.
  hidden = jnp.ones((1, 1, 32))
  logits = module.apply({'params': params}, hidden, method=network.FreeLM.lm_logits)
  np.testing.assert_allclose(logits[0, 0], params['wte']['embedding'].sum(-1), rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  module, params = _init(dataclasses.replace(CONFIG, dtype='bfloat16'))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert _logits(module, params, jnp.array([[1, 2]])).dtype == jnp.bfloat16
