"""The FreeLM network: a GPT-2 decoder with a multi-task teacher head.

The architecture is exactly GPT-2's (pre-LayerNorm blocks, tanh GELU, learned
position embeddings, output projection tied to the token embedding, LayerNorm
eps 1e-5), so GPT-2 and FreeLM checkpoints map onto it one tensor at a time.
The network knows nothing about losses: see `objectives.py`.

Every parameter carries logical axis names (`embed`, `heads`, `kv`, `mlp`,
`vocab`, ...) that `partitioning.LOGICAL_AXIS_RULES` maps onto the mesh.
Tensor names inside the network carry their shape: B batch, T time (query),
S time (key), D d_model, H heads, K head dim, F mlp, V vocab.
"""

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from freelm_jax.common import errors

Array = jax.Array
DTYPES = ('float32', 'bfloat16', 'float16')  # compute dtypes
# How the teacher heads are read and trained (`ModelConfig.head_reading`).
HEAD_READINGS = ('project', 'official')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape, numerics and head reading of a FreeLM network (gin/models/*.gin)."""

  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  max_len: int
  head_labels: Sequence[int] = (2, 8)
  mlp_dim: Optional[int] = None  # 4 * d_model when None, as in GPT-2.
  dtype: str = 'float32'  # compute dtype; parameters are always float32.
  scan_layers: bool = True
  remat_policy: str = 'none'  # 'none', 'full' or a jax.checkpoint_policies name.
  init_std: float = 0.02
  # 'xla' (any backend) or 'cudnn' (cuDNN's fused kernel: NVIDIA GPU, bf16/fp16).
  attention_impl: str = 'xla'
  # Embedding rows are padded to a multiple of this (128 suits GPU matmuls);
  # the padded rows' logits are masked, so they are never predicted.
  vocab_pad_multiple: int = 1
  # 'project': P(true) is the softmax of head 0's first two logits, and the
  # task-type head scores its own labels only. 'official': each head's whole
  # max_labels row, as FreeLM's released code trains and its README reads it.
  # The teacher loss and every P(true) of the model follow it (objectives.py).
  head_reading: str = 'project'

  def __post_init__(self):
    for name in ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'max_len',
                 'vocab_pad_multiple'):
      errors.check_count(ModelConfig, name, getattr(self, name), 1)
    errors.check(self.d_model % self.num_heads == 0, ModelConfig, 'num_heads',
                 self.num_heads, 'must divide {d_model}.',
                 d_model=(ModelConfig, 'd_model', self.d_model))
    if self.mlp_dim is not None:
      errors.check_count(ModelConfig, 'mlp_dim', self.mlp_dim, 1, ' (None: 4 * d_model)')
    errors.check(len(self.head_labels) >= 1 and all(
        isinstance(n, int) and n >= 1 for n in self.head_labels), ModelConfig,
                 'head_labels', self.head_labels,
                 'must be label counts (truth, task type), each at least 1.')
    errors.check(self.head_reading in HEAD_READINGS, ModelConfig, 'head_reading',
                 self.head_reading, f'must be one of {", ".join(map(repr, HEAD_READINGS))}.')
    errors.check(self.dtype in DTYPES, ModelConfig, 'dtype', self.dtype,
                 f'must be one of {", ".join(map(repr, DTYPES))}.')
    errors.check(self.remat_policy in ('none', 'full') or callable(
        getattr(jax.checkpoint_policies, str(self.remat_policy), None)), ModelConfig,
                 'remat_policy', self.remat_policy,
                 "must be 'none', 'full' or a jax.checkpoint_policies name.")
    errors.check(self.attention_impl in ('xla', 'cudnn'), ModelConfig, 'attention_impl',
                 self.attention_impl, "must be 'xla' or 'cudnn'.")
    errors.check(self.attention_impl == 'xla' or self.dtype in ('bfloat16', 'float16'),
                 ModelConfig, 'attention_impl', self.attention_impl,
                 "needs dtype 'bfloat16' or 'float16', not {dtype}.",
                 dtype=(ModelConfig, 'dtype', self.dtype))

  @property
  def padded_vocab_size(self) -> int:
    """Embedding rows: vocab_size rounded up to vocab_pad_multiple."""
    return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

  @property
  def mlp_features(self) -> int:
    return self.mlp_dim or 4 * self.d_model

  @property
  def max_labels(self) -> int:
    return max(self.head_labels)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


def _init(std: float, *axes: str):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(*axes: str):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(*axes: str):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def _layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-5, dtype=config.compute_dtype, name=name,
      scale_init=_ones('norm'), bias_init=_zeros('norm'))


def attention_mask(segment_ids: Array) -> Array:
  """Causal mask restricted to tokens of the same packed segment: [B,1,T,S]."""
  T = segment_ids.shape[-1]
  causal_TS = jnp.tril(jnp.ones((T, T), dtype=bool))
  return causal_TS[None, None] & segment_mask(segment_ids)


def segment_mask(segment_ids: Array) -> Array:
  """True where query and key are in the same packed segment: [B,1,T,S]."""
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def _cudnn_attention(q_BTHK: Array, k_BSHK: Array, v_BSHK: Array,
                     mask_B1TS: Optional[Array]) -> Array:
  """cuDNN's fused causal attention; a packed-segment mask goes in as a bias."""
  if jax.default_backend() != 'gpu':
    raise errors.ConfigError("ModelConfig.attention_impl='cudnn' needs an NVIDIA GPU; this "
                     f"backend is {jax.default_backend()!r}: use attention_impl='xla'")
  return jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask=mask_B1TS,
                                      is_causal=True, implementation='cudnn')


class DenseGeneral(nn.Module):
  """`x @ kernel + bias`, contracting x's last axes with the kernel's first.

  The kernel is created in its final shape (no flattening), so its logical
  axes hold from initialisation on.
  """

  features: tuple
  kernel_axes: tuple
  std: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    num_in = len(self.kernel_axes) - len(self.features)
    kernel = self.param('kernel', _init(self.std, *self.kernel_axes),
                        x.shape[-num_in:] + tuple(self.features))
    bias = self.param('bias', _zeros(*self.kernel_axes[num_in:]), tuple(self.features))
    contract = (tuple(range(x.ndim - num_in, x.ndim)), tuple(range(num_in)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            (contract, ((), ())))
    return y + bias.astype(self.dtype)


def _update_cache(module: nn.Module, k_BTHK: Array, v_BTHK: Array):
  """Decoding: writes this call's keys/values at the cache index.

  Returns (keys, values, mask) over the whole cache; query t sits at position
  `index + t` and sees cache positions up to its own. The cache's length is
  fixed by the input length at `init` (Flax's `cache` collection, as in the
  Flax lm1b example).
  """
  initialized = module.has_variable('cache', 'cached_key')
  key = module.variable('cache', 'cached_key', jnp.zeros, k_BTHK.shape, k_BTHK.dtype)
  value = module.variable('cache', 'cached_value', jnp.zeros, v_BTHK.shape, v_BTHK.dtype)
  index = module.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
  start = index.value
  if initialized:
    key.value = jax.lax.dynamic_update_slice(key.value, k_BTHK, (0, start, 0, 0))
    value.value = jax.lax.dynamic_update_slice(value.value, v_BTHK, (0, start, 0, 0))
    index.value = start + k_BTHK.shape[1]
  T, S = k_BTHK.shape[1], key.value.shape[1]
  mask_TS = jnp.arange(S)[None, :] <= start + jnp.arange(T)[:, None]
  return key.value, value.value, mask_TS[None, None]


class Attention(nn.Module):
  """Multi-head causal self-attention (GPT-2's `attn`).

  With `decode=True` keys and values also go to a `cache` collection and
  `mask_B1TS` is ignored (see `_update_cache`).
  """

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD: Array, mask_B1TS: Optional[Array]) -> Array:
    cfg = self.config
    K = cfg.d_model // cfg.num_heads
    proj = lambda name: DenseGeneral(
        (cfg.num_heads, K), ('embed', 'heads', 'kv'), cfg.init_std,
        cfg.compute_dtype, name=name)
    q_BTHK, k_BSHK, v_BSHK = (proj(n)(x_BTD) for n in ('query', 'key', 'value'))
    q_BTHK = nn.with_logical_constraint(
        q_BTHK, ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv'))
    if self.decode:
      k_BSHK, v_BSHK, mask_B1TS = _update_cache(self, k_BSHK, v_BSHK)
    if cfg.attention_impl == 'cudnn' and not self.decode:
      out_BTHK = _cudnn_attention(q_BTHK, k_BSHK, v_BSHK, mask_B1TS)
    else:
      out_BTHK = jax.nn.dot_product_attention(
          q_BTHK, k_BSHK, v_BSHK, mask=mask_B1TS, implementation='xla')
    return DenseGeneral((cfg.d_model,), ('heads', 'kv', 'embed'),
                        _residual_std(cfg), cfg.compute_dtype, name='out')(out_BTHK)


def _residual_std(cfg: ModelConfig) -> float:
  """GPT-2 scales residual projections by 1/sqrt(2 * num_layers) at init."""
  return cfg.init_std / (2 * cfg.num_layers) ** 0.5


class Mlp(nn.Module):
  """GPT-2's feed-forward block with the tanh-approximated GELU."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BTD: Array) -> Array:
    cfg = self.config
    h_BTF = DenseGeneral((cfg.mlp_features,), ('embed', 'mlp'), cfg.init_std,
                         cfg.compute_dtype, name='fc')(x_BTD)
    h_BTF = jax.nn.gelu(h_BTF, approximate=True)
    h_BTF = nn.with_logical_constraint(
        h_BTF, ('activation_batch', 'activation_length', 'activation_mlp'))
    return DenseGeneral((cfg.d_model,), ('mlp', 'embed'), _residual_std(cfg),
                        cfg.compute_dtype, name='proj')(h_BTF)


class Block(nn.Module):
  """One pre-LayerNorm transformer block; scan-compatible signature."""

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD: Array, mask_B1TS: Optional[Array]):
    cfg = self.config
    x_BTD = x_BTD + Attention(cfg, self.decode, name='attn')(
        _layer_norm(cfg, 'ln_1')(x_BTD), mask_B1TS)
    x_BTD = x_BTD + Mlp(cfg, name='mlp')(_layer_norm(cfg, 'ln_2')(x_BTD))
    x_BTD = nn.with_logical_constraint(
        x_BTD, ('activation_batch', 'activation_length', 'activation_embed'))
    return x_BTD, None


def _remat(block_cls, policy: str):
  """Wraps the block in `nn.remat` according to the configured policy."""
  if policy == 'none':
    return block_cls
  if policy == 'full':
    return nn.remat(block_cls, prevent_cse=False)
  return nn.remat(block_cls, prevent_cse=False,
                  policy=getattr(jax.checkpoint_policies, policy))


class Decoder(nn.Module):
  """The stack of blocks plus the final LayerNorm (GPT-2's `h` and `ln_f`)."""

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD: Array, mask_B1TS: Optional[Array]) -> Array:
    cfg = self.config
    block = _remat(Block, cfg.remat_policy)
    if cfg.scan_layers:
      x_BTD, _ = nn.scan(
          block, variable_axes={'params': 0, 'cache': 0},
          split_rngs={'params': True}, in_axes=nn.broadcast,
          length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: 'layers'})(
              cfg, self.decode, name='layers')(x_BTD, mask_B1TS)
    else:
      for i in range(cfg.num_layers):
        x_BTD, _ = block(cfg, self.decode, name=f'layers_{i}')(x_BTD, mask_B1TS)
    return _layer_norm(cfg, 'ln_f')(x_BTD)


class FreeLM(nn.Module):
  """GPT-2 decoder with tied LM logits and the multi-task teacher head.

  Methods: `__call__` gives final hidden states; `lm_logits` and
  `head_logits` read them out; `init_all` touches every parameter.
  `FreeLM(config, decode=True)` is the same network for incremental decoding
  with a KV cache (the `cache` collection; pass absolute `positions_BT`).
  """

  config: ModelConfig
  decode: bool = False

  def setup(self):
    cfg = self.config
    self.wte = nn.Embed(
        cfg.padded_vocab_size, cfg.d_model, dtype=cfg.compute_dtype,
        embedding_init=_init(cfg.init_std, 'vocab', 'embed'))
    self.wpe = nn.Embed(
        cfg.max_len, cfg.d_model, dtype=cfg.compute_dtype,
        embedding_init=_init(0.01, 'length', 'embed'))
    self.decoder = Decoder(cfg, self.decode)
    # (heads, d_model, max_labels), no bias: the layout of FreeLM's mtc_head.
    self.head_kernel = self.param(
        'head', _init(cfg.init_std, 'heads_mt', 'embed', 'labels'),
        (len(cfg.head_labels), cfg.d_model, cfg.max_labels))

  def __call__(self, tokens_BT: Array, positions_BT: Optional[Array] = None,
               segment_ids_BT: Optional[Array] = None) -> Array:
    """Returns the hidden states after `ln_f`, [B, T, D]."""
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(
          jnp.arange(tokens_BT.shape[-1]), tokens_BT.shape)
    x_BTD = self.wte(tokens_BT) + self.wpe(positions_BT)
    x_BTD = nn.with_logical_constraint(
        x_BTD, ('activation_batch', 'activation_length', 'activation_embed'))
    return self.decoder(x_BTD, self._mask(tokens_BT, segment_ids_BT))

  def _mask(self, tokens_BT: Array, segment_ids_BT: Optional[Array]) -> Optional[Array]:
    """The attention mask; with cuDNN only the segments' (it applies causality)."""
    if self.decode:
      return None
    if self.config.attention_impl == 'cudnn':
      return None if segment_ids_BT is None else segment_mask(segment_ids_BT)
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones_like(tokens_BT)
    return attention_mask(segment_ids_BT)

  def lm_logits(self, hidden_BTD: Array) -> Array:
    """Next-token logits through the tied embedding, [B, T, padded V].

    Columns of padded vocabulary rows hold the dtype's lowest value, so
    softmax, argmax and sampling never pick them.
    """
    logits_BTV = self.wte.attend(hidden_BTD)
    cfg = self.config
    if cfg.padded_vocab_size == cfg.vocab_size:
      return logits_BTV
    real_V = jnp.arange(cfg.padded_vocab_size) < cfg.vocab_size
    return jnp.where(real_V, logits_BTV, jnp.finfo(logits_BTV.dtype).min)

  def head_logits(self, hidden_BD: Array) -> Array:
    """All teacher heads' logits for one hidden state per row, [B, heads, L]."""
    kernel = jnp.asarray(self.head_kernel, self.config.compute_dtype)
    return jnp.einsum('bd,hdl->bhl', hidden_BD, kernel)

  def init_all(self, tokens_BT: Array) -> Array:
    hidden_BTD = self(tokens_BT)
    return self.lm_logits(hidden_BTD).sum() + self.head_logits(
        hidden_BTD[:, -1]).sum()
