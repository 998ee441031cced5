"""The `network.ModelConfig` of a model_dir's operative `config.gin`, read and written.

A model_dir's `config.gin` names the modules its run imported (seqio tasks,
TensorFlow); reading the model's shape back must not run it. The reader here
parses the file's statements only and resolves the `ModelConfig` bindings and
the macros they use.
"""

import dataclasses

from gin import config_parser

from freelm_jax.common import errors
from freelm_jax.common import storage
from freelm_jax.core import network


class _Macro:
  """A macro or configurable reference, resolved after parsing."""

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
  if not storage.resolve(path).is_file():
    raise errors.CheckpointError(f'{path}: no such file (the model_dir\'s operative config).')
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
        raise errors.CheckpointError(f'{path}: cannot resolve {value.name} for ModelConfig.')
      return resolve(macros[value.name], depth + 1)
    if isinstance(value, (list, tuple)):
      return type(value)(resolve(v, depth) for v in value)
    return value

  try:
    return network.ModelConfig(**{k: resolve(v) for k, v in bindings.items()})
  except TypeError as e:
    raise errors.CheckpointError(f'{path}: bad ModelConfig bindings ({e}).') from None


def model_config_to_gin(config: network.ModelConfig, comment: str = '') -> str:
  """`network.ModelConfig` bindings that `model_config_from_gin` reads back."""
  lines = [f'# {comment}'] if comment else []
  lines += [f'network.ModelConfig.{field.name} = {getattr(config, field.name)!r}'
            for field in dataclasses.fields(config)]
  return '\n'.join(lines) + '\n'
