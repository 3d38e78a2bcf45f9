"""The preset configs (TOML): ``demo`` (offline digits, a small CNN) and ``flowers`` (TF Flowers, InceptionV3)."""
