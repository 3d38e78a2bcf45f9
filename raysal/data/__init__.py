"""Images in, before any model: where they come from (``sources``: manifest, folder, TFDS, the
offline digits; ``manifest`` for Parquet manifests and packed shards), listing them once
(``listing``), decoding them (``images``, ``decode``), packing a large pool into shards
(``pack``) and turning a user's images into a ready run (``prepare``, ``splits``). No module
here imports Ray or TensorFlow when imported.
"""
