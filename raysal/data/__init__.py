"""Images in, before any model: where they come from (``sources``: manifest, folder, TFDS, the
offline digits; ``manifest`` for Parquet manifests and packed shards), listing them once
(``listing``), decoding them (``images``, ``decode``), packing a large pool into shards
(``pack``), turning a user's images into a ready run (``prepare``, ``splits``), and a long-tailed
subsample of a labelled pool for simulations (``imbalance``). No module here imports Ray or
TensorFlow when imported.
"""
