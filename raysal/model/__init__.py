"""The model: building and loading Keras 2 models (``models``, after ``keras_env``), scoring a
batch in an actor (``scorer``), training across Ray Train workers (``train``, ``trainset``), and
the embeddings with the numpy head that rescores them (``embeddings``). TensorFlow loads when a
function needs it, not when this package is imported.
"""
