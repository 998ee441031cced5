"""FreeLM in JAX/Flax: a GPT-2 decoder trained with a language and a teacher signal."""
