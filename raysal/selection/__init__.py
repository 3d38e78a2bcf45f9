"""Choosing what to label, in pure numpy: no Ray, no TensorFlow, and nothing from ``raysal.run``.

``criteria`` scores probabilities (higher = more informative); ``strategies`` is the registry of
``select.strategy`` values that rounds, the Python API and the simulation all select through;
``topk`` and ``scan`` find the exact top k of a stream of parts; ``diversity`` spreads a batch
over embeddings (k-center greedy); ``stopping`` says when the predictions have stopped changing.
"""
