"""Hugging Face GPT-2 and FreeLM directories: their tensor names and files.

A GPT-2 directory holds `config.json` + `model.safetensors` (or
`pytorch_model.bin`, read with torch), weights named `[transformer.]wte.weight`,
`h.<i>.attn.c_attn.weight`, ... (Conv1D kernels are (in, out)). The official
FreeLM layout adds `mtc_head.weight` shaped (heads, d_model, max_labels) and
`num_multi_task_labels` (e.g. "2,3") in `config.json`; head 0 is the truth
head, read over its whole row (`ModelConfig.head_reading = 'official'`). Our
exports also record their own reading in `config.json` (`HEAD_READING_KEY`).
This module maps those tensors to our scanned parameter tree and back.
"""

import json
import os
import re
import shutil
from typing import Any, Mapping, Optional

import numpy as np
from safetensors import numpy as safetensors_np

from freelm_jax.common import errors
from freelm_jax.core import network
from freelm_jax.core import param_layout

TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'tokenizer.json')
# config.json's record of `ModelConfig.head_reading`, which our exports write;
# a FreeLM-layout config.json without it comes from the official code.
HEAD_READING_KEY = 'freelm_jax_head_reading'
_MASK_BUFFER = re.compile(r'h\.\d+\.attn\.(masked_)?bias$')  # GPT-2's causal-mask buffers.


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """name -> float32 array from model.safetensors, else pytorch_model.bin."""
  safetensors_file = os.path.join(path, 'model.safetensors')
  torch_file = os.path.join(path, 'pytorch_model.bin')
  if os.path.isfile(safetensors_file):
    tensors = safetensors_np.load_file(safetensors_file)
  elif os.path.isfile(torch_file):
    try:
      # lazy: torch is optional and heavy; only pytorch_model.bin needs it
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise errors.CheckpointError(
          f'{torch_file}: reading it needs torch: pip install "freelm_jax[interop]" '
          '(or use a model.safetensors copy).') from None
    state = torch.load(torch_file, map_location='cpu', weights_only=True)
    tensors = {k: v.detach().float().numpy() for k, v in state.items()}
  else:
    raise errors.CheckpointError(f'{path}: no model.safetensors or pytorch_model.bin.')
  return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def config_from_hf(hf: Mapping[str, Any], path: str = '') -> network.ModelConfig:
  """Our ModelConfig for a GPT-2 `config.json`; unsupported variants fail."""
  unsupported = {
      'activation_function': ('gelu_new', 'gelu_pytorch_tanh'),
      'scale_attn_weights': (True,), 'scale_attn_by_inverse_layer_idx': (False,),
      'reorder_and_upcast_attn': (False,), 'layer_norm_epsilon': (1e-5,),
      'tie_word_embeddings': (True,)}
  for key, allowed in unsupported.items():
    if key in hf and hf[key] not in allowed:
      raise errors.CheckpointError(f'{path}/config.json: {key}={hf[key]!r} is not '
                            f'supported (expected {allowed[0]!r}).')
  labels = hf.get('num_multi_task_labels')
  head_labels = tuple(int(x) for x in str(labels).split(',')) if labels else (2,)
  reading = hf.get(HEAD_READING_KEY, 'official' if labels else 'project')
  if reading not in network.HEAD_READINGS:
    raise errors.CheckpointError(f'{path}/config.json: {HEAD_READING_KEY}={reading!r} is not '
                                 f'one of {", ".join(map(repr, network.HEAD_READINGS))}.')
  return network.ModelConfig(
      vocab_size=hf['vocab_size'], num_layers=hf['n_layer'], d_model=hf['n_embd'],
      num_heads=hf['n_head'], max_len=hf['n_positions'], head_labels=head_labels,
      mlp_dim=hf.get('n_inner'), head_reading=reading)


def config_to_hf(config: network.ModelConfig) -> dict[str, Any]:
  """A GPT-2 `config.json` (plus FreeLM's `num_multi_task_labels` and our
  `HEAD_READING_KEY`)."""
  return {
      'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
      'vocab_size': config.vocab_size, 'n_layer': config.num_layers,
      'n_embd': config.d_model, 'n_head': config.num_heads,
      'n_positions': config.max_len, 'n_inner': config.mlp_dim,
      'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5,
      'initializer_range': config.init_std, 'tie_word_embeddings': True,
      'num_multi_task_labels': ','.join(str(n) for n in config.head_labels),
      HEAD_READING_KEY: config.head_reading,
      'torch_dtype': 'float32'}


def params_from_hf(tensors: Mapping[str, np.ndarray], config: network.ModelConfig,
                   path: str = '') -> param_layout.Params:
  """Our scanned parameter tree from GPT-2 / FreeLM tensors."""
  tensors = {k.removeprefix('transformer.'): v for k, v in tensors.items()
             if not _MASK_BUFFER.search(k)}
  used = set()

  def take(name: str, shape: tuple) -> np.ndarray:
    if name not in tensors:
      raise errors.CheckpointError(f'{path}: no tensor {name!r}.')
    if tensors[name].shape != shape:
      raise errors.CheckpointError(f'{path}: {name!r} has shape {tensors[name].shape}, '
                            f'expected {shape} from config.json.')
    used.add(name)
    return tensors[name]

  D, H, F = config.d_model, config.num_heads, config.mlp_features
  K = D // H
  layers = [_layer_from_hf(lambda n, s, i=i: take(f'h.{i}.{n}', s), D, H, K, F)
            for i in range(config.num_layers)]
  wte = take('wte.weight', (config.vocab_size, D))
  if 'lm_head.weight' in tensors and not np.allclose(
      take('lm_head.weight', wte.shape), wte, atol=1e-6):
    raise errors.CheckpointError(f'{path}: lm_head.weight differs from wte.weight; '
                          'only tied output embeddings are supported.')
  if 'mtc_head.weight' in tensors:
    head = take('mtc_head.weight', (len(config.head_labels), D, config.max_labels))
  else:
    head = np.zeros((len(config.head_labels), D, config.max_labels), np.float32)
  padding = config.padded_vocab_size - config.vocab_size  # rows the model masks
  params = {
      'wte': {'embedding': np.pad(wte, ((0, padding), (0, 0)))},
      'wpe': {'embedding': take('wpe.weight', (config.max_len, D))},
      'head': head,
      'decoder': {
          'ln_f': {'scale': take('ln_f.weight', (D,)), 'bias': take('ln_f.bias', (D,))},
          'layers': param_layout.stack(layers)}}
  unused = sorted(set(tensors) - used)
  if unused:
    raise errors.CheckpointError(f'{path}: unexpected tensors {unused[:5]}.')
  return params


def _layer_from_hf(take, D: int, H: int, K: int, F: int) -> param_layout.Params:
  """One block's parameters from its GPT-2 tensors (`take(name, shape)`)."""
  qkv_kernel = take('attn.c_attn.weight', (D, 3 * D)).reshape(D, 3, H, K)
  qkv_bias = take('attn.c_attn.bias', (3 * D,)).reshape(3, H, K)
  attn = {name: {'kernel': qkv_kernel[:, i], 'bias': qkv_bias[i]}
          for i, name in enumerate(('query', 'key', 'value'))}
  attn['out'] = {'kernel': take('attn.c_proj.weight', (D, D)).reshape(H, K, D),
                 'bias': take('attn.c_proj.bias', (D,))}
  norm = lambda n: {'scale': take(f'{n}.weight', (D,)), 'bias': take(f'{n}.bias', (D,))}
  return {
      'attn': attn, 'ln_1': norm('ln_1'), 'ln_2': norm('ln_2'),
      'mlp': {'fc': {'kernel': take('mlp.c_fc.weight', (D, F)),
                     'bias': take('mlp.c_fc.bias', (F,))},
              'proj': {'kernel': take('mlp.c_proj.weight', (F, D)),
                       'bias': take('mlp.c_proj.bias', (D,))}}}


def params_to_hf(params: param_layout.Params,
                 config: network.ModelConfig) -> dict[str, np.ndarray]:
  """GPT-2 / FreeLM tensors (`transformer.*`, `lm_head`, `mtc_head`) from ours."""
  params = param_layout.scanned(param_layout.to_numpy(params), config.num_layers)
  D = config.d_model
  layers = params['decoder']['layers']
  wte = params['wte']['embedding'][:config.vocab_size]  # without padded rows
  out = {'transformer.wte.weight': wte,
         'transformer.wpe.weight': params['wpe']['embedding'],
         'transformer.ln_f.weight': params['decoder']['ln_f']['scale'],
         'transformer.ln_f.bias': params['decoder']['ln_f']['bias'],
         'lm_head.weight': wte,
         'mtc_head.weight': params['head']}
  for i in range(config.num_layers):
    layer = param_layout.index(layers, i)
    attn, mlp = layer['attn'], layer['mlp']
    prefix = f'transformer.h.{i}.'
    qkv = ('query', 'key', 'value')
    out.update({
        prefix + 'attn.c_attn.weight': np.concatenate(
            [attn[n]['kernel'].reshape(D, D) for n in qkv], axis=1),
        prefix + 'attn.c_attn.bias': np.concatenate(
            [attn[n]['bias'].reshape(D) for n in qkv]),
        prefix + 'attn.c_proj.weight': attn['out']['kernel'].reshape(D, D),
        prefix + 'attn.c_proj.bias': attn['out']['bias'],
        prefix + 'mlp.c_fc.weight': mlp['fc']['kernel'],
        prefix + 'mlp.c_fc.bias': mlp['fc']['bias'],
        prefix + 'mlp.c_proj.weight': mlp['proj']['kernel'],
        prefix + 'mlp.c_proj.bias': mlp['proj']['bias']})
    for norm in ('ln_1', 'ln_2'):
      out[f'{prefix}{norm}.weight'] = layer[norm]['scale']
      out[f'{prefix}{norm}.bias'] = layer[norm]['bias']
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def save_hf(path: str, params: param_layout.Params, config: network.ModelConfig,
            tokenizer_dir: Optional[str] = None) -> None:
  """Writes config.json + model.safetensors (+ tokenizer files) to `path`."""
  os.makedirs(path, exist_ok=True)
  safetensors_np.save_file(params_to_hf(params, config),
                           os.path.join(path, 'model.safetensors'),
                           metadata={'format': 'pt'})
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config_to_hf(config), f, indent=2)
  copy_tokenizer_files(tokenizer_dir, path)


def copy_tokenizer_files(source: Optional[str], target: str) -> None:
  """Copies `TOKENIZER_FILES` found in `source` (if given) to `target`."""
  for name in TOKENIZER_FILES:
    if source and os.path.isfile(os.path.join(source, name)):
      shutil.copy(os.path.join(source, name), os.path.join(target, name))
