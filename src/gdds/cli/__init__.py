"""The command line (``gdds``) and its reports: parsing, rendering (markdown, figures) and the
noising demo. It may import every other layer; nothing imports it."""
from .main import main

__all__ = ["main"]
