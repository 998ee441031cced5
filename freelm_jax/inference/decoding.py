"""Sampling from a FreeLM: greedy, temperature, top-k and top-p, with a KV
cache or (as its reference) recomputing the whole prefix at every step."""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
  temperature: float
  top_k: Optional[int]
  top_p: Optional[float]

  def __call__(self, logits_BV, rng):
    """Greedy (temperature 0) or sampled next tokens, [B]."""
    if self.temperature == 0:
      return jnp.argmax(logits_BV, -1).astype(jnp.int32)
    logits_BV = logits_BV.astype(jnp.float32) / self.temperature
    if self.top_k:
      kth_B1 = jax.lax.top_k(logits_BV, self.top_k)[0][:, -1:]
      logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if self.top_p is not None and self.top_p < 1:
      sorted_BV = -jnp.sort(-logits_BV, axis=-1)
      probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
      keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < self.top_p
      cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), -1, keepdims=True)
      logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
    return jax.random.categorical(rng, logits_BV).astype(jnp.int32)


def last_logits(module, tokens_BT, positions_BT):
  return module.lm_logits(module(tokens_BT, positions_BT)[:, -1])


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def generate_cached(module, params, prompt_BP, rng, max_new: int, sample: Sampling):
  """Prefills the KV cache with the prompt, then decodes one token per step."""
  B, P = prompt_BP.shape
  S = P + max_new
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((B, S), jnp.int32), jnp.zeros((B, S), jnp.int32)))
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])

  def forward(cache, tokens_BT, start):
    positions_BT = start + jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    logits_BV, variables = module.apply(
        {'params': params, 'cache': cache}, tokens_BT, positions_BT,
        method=last_logits, mutable=['cache'])
    return variables['cache'], logits_BV

  cache, logits_BV = forward(cache, prompt_BP, 0)

  def step(carry, inputs):
    cache, logits_BV = carry
    i, step_rng = inputs
    token_B = sample(logits_BV, step_rng)
    cache, logits_BV = forward(cache, token_B[:, None], P + i)
    return (cache, logits_BV), token_B

  _, tokens_NB = jax.lax.scan(step, (cache, logits_BV),
                              (jnp.arange(max_new), jax.random.split(rng, max_new)))
  return tokens_NB.T


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def generate_uncached(module, params, prompt_BP, rng, max_new: int, sample: Sampling):
  """Reference decoding: the whole sequence is recomputed at every step."""
  B, P = prompt_BP.shape
  buffer_BS = jnp.concatenate([prompt_BP, jnp.zeros((B, max_new), jnp.int32)], axis=1)

  def step(buffer_BS, inputs):
    i, step_rng = inputs
    logits_BSV = module.apply({'params': params}, buffer_BS,
                              method=lambda m, t: m.lm_logits(m(t)))
    token_B = sample(jax.lax.dynamic_index_in_dim(logits_BSV, P + i - 1, 1, False),
                     step_rng)
    return jax.lax.dynamic_update_slice(buffer_BS, token_B[:, None], (0, P + i)), token_B

  _, tokens_NB = jax.lax.scan(step, buffer_BS,
                              (jnp.arange(max_new), jax.random.split(rng, max_new)))
  return tokens_NB.T
