"""Corpora: named splits of documents and their fingerprints (:mod:`.sources`), the corpora the
literature uses (:mod:`.recipes`, the one list of corpus names), and the readers behind them:
the embedded texts, local files, character streams and Hugging Face datasets of the local cache."""
