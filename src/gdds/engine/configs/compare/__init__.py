"""Comparison presets of ``gdds compare --preset`` (YAML files of its options)."""
