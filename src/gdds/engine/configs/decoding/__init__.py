"""Presets of ``gdds decode-bench --preset`` (YAML files of its options)."""
