"""The data layer: input pipelines, input workers and iterator snapshots; the
one layer of the library that imports TensorFlow and seqio (with `tasks`).
TensorFlow is imported first, here, without its C++ start-up lines."""

from freelm_jax.common import console

console.import_tensorflow_quietly()
