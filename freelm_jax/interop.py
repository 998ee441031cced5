"""Checkpoints in and out: our model_dirs, Hugging Face GPT-2 and FreeLM's layout.

Three directory layouts hold a FreeLM network:

* ours: a model_dir with `config.gin` and orbax `checkpoints/<step>/state`;
* Hugging Face GPT-2: `config.json` + `model.safetensors` (or
  `pytorch_model.bin`, read with torch), weights named `[transformer.]wte.weight`,
  `h.<i>.attn.c_attn.weight`, ... (Conv1D kernels are (in, out));
* the official FreeLM layout: GPT-2's, plus `mtc_head.weight` shaped
  (heads, d_model, max_labels) and `num_multi_task_labels` (e.g. "2,3") in
  `config.json`. Head 0 is the truth head. Whether its `[sep]`/`[cls]` are
  added tokens or plain text is read from its tokenizer files and embedding
  rows by `predictor.checkpoint_tokenizer` (docs/inference.md).

Parameters are handled here as nested dicts of numpy arrays in the scanned
layout (`decoder/layers/...` with a leading layer axis). Neither TensorFlow nor
seqio is imported.
"""

import dataclasses
import json
import os
import re
import shutil
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np

from freelm_jax import errors
from freelm_jax import network
from freelm_jax import storage

Params = dict[str, Any]
TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'tokenizer.json')
_MASK_BUFFER = re.compile(r'h\.\d+\.attn\.(masked_)?bias$')  # GPT-2's causal-mask buffers.
CheckpointError = errors.CheckpointError


@dataclasses.dataclass
class Checkpoint:
  """A loaded network: its config, numpy parameters and where it came from."""

  config: network.ModelConfig
  params: Params
  has_teacher_head: bool
  directory: str


# --- Layout detection and loading -------------------------------------------


def is_model_dir(path: str) -> bool:
  """Whether `path` (local or remote, e.g. gs://) is one of our model_dirs."""
  return (storage.resolve(path) / 'checkpoints').is_dir()


def load(path: str, step: Optional[int] = None) -> Checkpoint:
  """Loads our model_dir (newest or `step`; local or remote), an HF GPT-2 or a
  FreeLM directory (local)."""
  if not storage.resolve(path).is_dir():
    raise CheckpointError(f'{path}: no such directory.')
  if is_model_dir(path):
    config, params = load_model_dir(path, step)
    return Checkpoint(config, params, True, path)
  if os.path.isfile(os.path.join(path, 'config.json')):
    if step is not None:
      raise CheckpointError(f'{path}: a Hugging Face directory has no steps.')
    return load_hf(path)
  raise CheckpointError(
      f'{path}: neither a model_dir (checkpoints/) nor a Hugging Face '
      'directory (config.json).')


def load_hf(path: str) -> Checkpoint:
  """Reads an HF GPT-2 or FreeLM-layout directory."""
  with open(os.path.join(path, 'config.json')) as f:
    hf_config = json.load(f)
  tensors = read_state_dict(path)
  config = config_from_hf(hf_config, path)
  return Checkpoint(config, params_from_hf(tensors, config, path),
                    'mtc_head.weight' in tensors, path)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """name -> float32 array from model.safetensors, else pytorch_model.bin."""
  safetensors_file = os.path.join(path, 'model.safetensors')
  torch_file = os.path.join(path, 'pytorch_model.bin')
  if os.path.isfile(safetensors_file):
    from safetensors import numpy as safetensors_np  # pylint: disable=g-import-not-at-top
    tensors = safetensors_np.load_file(safetensors_file)
  elif os.path.isfile(torch_file):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise CheckpointError(f'{torch_file}: reading it needs torch (make setup '
                            'installs a CPU build).') from None
    state = torch.load(torch_file, map_location='cpu', weights_only=True)
    tensors = {k: v.detach().float().numpy() for k, v in state.items()}
  else:
    raise CheckpointError(f'{path}: no model.safetensors or pytorch_model.bin.')
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
      raise CheckpointError(f'{path}/config.json: {key}={hf[key]!r} is not '
                            f'supported (expected {allowed[0]!r}).')
  labels = hf.get('num_multi_task_labels')
  head_labels = tuple(int(x) for x in str(labels).split(',')) if labels else (2,)
  return network.ModelConfig(
      vocab_size=hf['vocab_size'], num_layers=hf['n_layer'], d_model=hf['n_embd'],
      num_heads=hf['n_head'], max_len=hf['n_positions'], head_labels=head_labels,
      mlp_dim=hf.get('n_inner'))


def config_to_hf(config: network.ModelConfig) -> dict[str, Any]:
  """A GPT-2 `config.json` (plus FreeLM's `num_multi_task_labels`)."""
  return {
      'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
      'vocab_size': config.vocab_size, 'n_layer': config.num_layers,
      'n_embd': config.d_model, 'n_head': config.num_heads,
      'n_positions': config.max_len, 'n_inner': config.mlp_dim,
      'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5,
      'initializer_range': config.init_std, 'tie_word_embeddings': True,
      'num_multi_task_labels': ','.join(str(n) for n in config.head_labels),
      'torch_dtype': 'float32'}


# --- HF tensor names <-> our parameters -------------------------------------


def params_from_hf(tensors: Mapping[str, np.ndarray], config: network.ModelConfig,
                   path: str = '') -> Params:
  """Our scanned parameter tree from GPT-2 / FreeLM tensors."""
  tensors = {k.removeprefix('transformer.'): v for k, v in tensors.items()
             if not _MASK_BUFFER.search(k)}
  used = set()

  def take(name: str, shape: tuple) -> np.ndarray:
    if name not in tensors:
      raise CheckpointError(f'{path}: no tensor {name!r}.')
    if tensors[name].shape != shape:
      raise CheckpointError(f'{path}: {name!r} has shape {tensors[name].shape}, '
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
    raise CheckpointError(f'{path}: lm_head.weight differs from wte.weight; '
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
          'layers': _stack(layers)}}
  unused = sorted(set(tensors) - used)
  if unused:
    raise CheckpointError(f'{path}: unexpected tensors {unused[:5]}.')
  return params


def _layer_from_hf(take, D: int, H: int, K: int, F: int) -> Params:
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


def params_to_hf(params: Params, config: network.ModelConfig) -> dict[str, np.ndarray]:
  """GPT-2 / FreeLM tensors (`transformer.*`, `lm_head`, `mtc_head`) from ours."""
  params = scanned(to_numpy(params), config.num_layers)
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
    layer = _index(layers, i)
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


def save_hf(path: str, params: Params, config: network.ModelConfig,
            tokenizer_dir: Optional[str] = None) -> None:
  """Writes config.json + model.safetensors (+ tokenizer files) to `path`."""
  from safetensors import numpy as safetensors_np  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  safetensors_np.save_file(params_to_hf(params, config),
                           os.path.join(path, 'model.safetensors'),
                           metadata={'format': 'pt'})
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config_to_hf(config), f, indent=2)
  copy_tokenizer_files(tokenizer_dir, path)


def copy_tokenizer_files(source: Optional[str], target: str) -> None:
  for name in TOKENIZER_FILES:
    if source and os.path.isfile(os.path.join(source, name)):
      shutil.copy(os.path.join(source, name), os.path.join(target, name))


# --- Layer layouts and fitting -----------------------------------------------


def to_numpy(tree: Any) -> Any:
  """Nested dicts of host float arrays (from jax or numpy leaves)."""
  if isinstance(tree, Mapping):
    return {k: to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def _stack(layers: list) -> Params:
  if isinstance(layers[0], Mapping):
    return {k: _stack([layer[k] for layer in layers]) for k in layers[0]}
  return np.stack(layers)


def _index(tree: Any, i: int) -> Any:
  if isinstance(tree, Mapping):
    return {k: _index(v, i) for k, v in tree.items()}
  return tree[i]


def scanned(params: Params, num_layers: int) -> Params:
  """Parameters in the scanned layout (`decoder/layers` with a layer axis)."""
  decoder = params['decoder']
  if 'layers' in decoder:
    return params
  layers = [decoder[f'layers_{i}'] for i in range(num_layers)]
  return dict(params, decoder={'ln_f': decoder['ln_f'], 'layers': _stack(layers)})


def unscanned(params: Params, num_layers: int) -> Params:
  """Parameters in the unrolled layout (`decoder/layers_<i>`)."""
  decoder = params['decoder']
  if 'layers' not in decoder:
    return params
  layers = {f'layers_{i}': _index(decoder['layers'], i) for i in range(num_layers)}
  return dict(params, decoder={'ln_f': decoder['ln_f'], **layers})


def init_from(path: str, target: Params, config: network.ModelConfig) -> Params:
  """The weights of checkpoint `path` fitted to `target` (see `fit_params`).

  A checkpoint without a teacher head (plain GPT-2) keeps `target`'s head.
  """
  logging.info('Initialising from %s.', path)
  return fit_checkpoint(load(path), target, config)


def fit_checkpoint(checkpoint: Checkpoint, target: Params,
                   config: network.ModelConfig) -> Params:
  """`fit_params` of a loaded checkpoint; without a teacher head, the head
  stays `target`'s."""
  source = checkpoint.params
  if not checkpoint.has_teacher_head:
    source = dict(source, head=np.asarray(target['head']))
  return fit_params(source, target, config)


def fit_params(source: Params, target: Params, config: network.ModelConfig) -> Params:
  """`source` weights in the shapes and layout of `target` (a fresh init).

  The token embedding may grow (new rows: the mean of the old ones, e.g. for
  FreeLM's `[sep]`, `[cls]`, `[pad]` after GPT-2's 50257 tokens); position
  embeddings may be cut to a shorter context; heads and labels missing from
  the source keep the target's initialisation. Any other mismatch fails.
  """
  source = scanned(to_numpy(source), config.num_layers)
  target = scanned(to_numpy(target), config.num_layers)
  fitted = _fit_tree(source, target, '')
  return fitted if config.scan_layers else unscanned(fitted, config.num_layers)


def _fit_tree(source: Any, target: Any, name: str) -> Any:
  if isinstance(target, Mapping):
    if not isinstance(source, Mapping) or set(source) != set(target):
      raise CheckpointError(f'Parameter {name or "/"}: the checkpoint has '
                            f'{sorted(source) if isinstance(source, Mapping) else "an array"},'
                            f' the model {sorted(target)}.')
    return {k: _fit_tree(source[k], target[k], f'{name}/{k}') for k in target}
  if source.shape == target.shape:
    return source.astype(target.dtype)
  if name == '/wte/embedding' and source.shape[0] < target.shape[0]:
    extra = np.broadcast_to(source.mean(0), (target.shape[0] - source.shape[0],
                                              source.shape[1]))
    logging.info('Token embedding grown from %d to %d rows.', source.shape[0], target.shape[0])
    return np.concatenate([source, extra]).astype(target.dtype)
  if name == '/wpe/embedding' and source.shape[0] > target.shape[0]:
    logging.info('Position embedding cut from %d to %d.', source.shape[0], target.shape[0])
    return source[:target.shape[0]].astype(target.dtype)
  if name == '/head' and source.shape[1] == target.shape[1]:
    heads, labels = min(source.shape[0], target.shape[0]), min(source.shape[2], target.shape[2])
    out = np.array(target)
    out[:heads, :, :labels] = source[:heads, :, :labels]
    return out
  raise CheckpointError(f'Parameter {name}: the checkpoint has shape '
                        f'{source.shape}, the model {target.shape}.')


# --- Our model_dir -------------------------------------------------------------


def checkpoint_steps(model_dir: str) -> list[int]:
  """Committed checkpoint steps in a model_dir, ascending."""
  root = storage.resolve(model_dir) / 'checkpoints'
  if not root.is_dir():
    return []
  return sorted(int(d.name) for d in root.iterdir()
                if d.name.isdigit() and (d / 'state').is_dir())


def load_model_dir(model_dir: str, step: Optional[int] = None
                   ) -> tuple[network.ModelConfig, Params]:
  """(ModelConfig from config.gin, numpy params of step `step` or the newest)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  config = model_config_from_gin(str(storage.resolve(model_dir) / 'config.gin'))
  steps = checkpoint_steps(model_dir)
  if not steps:
    raise CheckpointError(f'{model_dir}: no checkpoint in checkpoints/.')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise CheckpointError(f'{model_dir}: no checkpoint at step {step}; steps: {steps}.')
  path = storage.resolve(model_dir) / 'checkpoints' / str(step) / 'state'
  tree = ocp.PyTreeCheckpointHandler().metadata(path).tree
  item = {'params': jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                                 tree['params'])}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))
  return config, scanned(to_numpy(restored['params']), config.num_layers)


class _Macro:

  def __init__(self, name: str):
    self.name = name


class _Delegate:
  """Gin parser delegate: macros and references become placeholders."""

  def configurable_reference(self, name, evaluate):
    del evaluate
    return _Macro('@' + name)

  def macro(self, name):
    return _Macro(name)


def model_config_from_gin(path: str) -> network.ModelConfig:
  """The `network.ModelConfig` bound in a gin file, without running the file.

  Only the file's macros and `ModelConfig` bindings are read (imports and
  includes are not followed), so this neither needs nor imports the modules
  the file names, and leaves the global gin config alone.
  """
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  if not storage.resolve(path).is_file():
    raise CheckpointError(f'{path}: no such file (the model_dir\'s operative config).')
  macros, bindings = {}, {}
  with storage.resolve(path).open() as f:
    for statement in config_parser.ConfigParser(f, _Delegate()):
      if not isinstance(statement, config_parser.BindingStatement) or statement.scope:
        continue
      if not statement.arg_name:
        macros[statement.selector] = statement.value
      elif statement.selector.split('.')[-1] == 'ModelConfig':
        bindings[statement.arg_name] = statement.value

  def resolve(value, depth=0):
    if isinstance(value, _Macro):
      if value.name not in macros or depth > 20:
        raise CheckpointError(f'{path}: cannot resolve {value.name} for ModelConfig.')
      return resolve(macros[value.name], depth + 1)
    if isinstance(value, (list, tuple)):
      return type(value)(resolve(v, depth) for v in value)
    return value

  try:
    return network.ModelConfig(**{k: resolve(v) for k, v in bindings.items()})
  except TypeError as e:
    raise CheckpointError(f'{path}: bad ModelConfig bindings ({e}).') from None


def model_config_to_gin(config: network.ModelConfig, comment: str = '') -> str:
  """`network.ModelConfig` bindings that `model_config_from_gin` reads back."""
  lines = [f'# {comment}'] if comment else []
  lines += [f'network.ModelConfig.{field.name} = {getattr(config, field.name)!r}'
            for field in dataclasses.fields(config)]
  return '\n'.join(lines) + '\n'
