"""The YAML presets of ``gdds train --config NAME`` (package data)."""
