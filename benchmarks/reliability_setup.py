"""The set-up of the reliability replay (``benchmarks/reliability.py``): tiny stand-ins for the attack's runs,
so that the replay takes minutes on 2 CPU cores, and the runner that holds them.

- a corpus of 6 Shakespeare works cut to 3,000 characters each, and ``tiny.yaml``: character tokens, the
  semantic kernel on co-occurrence embeddings (as the ``demo`` preset), a 2-layer width-64 DiT, 32-token
  blocks, 4 steps. The attack's ``--config demo`` rows use this file instead: a bad value is refused before
  the preset matters, and an input that is wrongly accepted trains for seconds, not minutes;
- a run of it (``base/run``) exported as a model folder (``base/model``; ``base/model-raw`` with the raw
  weights), and another model (other corpus, width 32) whose files stand in for "another model's";
- for the long-line rows, one line of 8 MB (the attack used 30 MB), and half of it;
- the bad corpus folders and YAML files of the inputs table (``bad/``), an existing folder, a regular file
  (nothing can be created under it) and the commands' working folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from replay import Runner

HUGE_LINE_BYTES = 8_000_000
TINY_YAML = """\
seed: 0
data: {{corpus: {corpus}, tokenizer: char, compact_vocab: true, seq_len: 32}}
process: {{kernel: semantic, embeddings: cooccurrence, embedding_dim: 8, kernel_args: {{k: 8}}}}
model: {{preset: tiny, layers: 2, width: 64, heads: 2, cond_width: 32}}
train: {{max_steps: 4, batch_size: 8, lr: 0.003, warmup_steps: 1, ckpt_every: 2, eval_every: 2, eval_batches: 1,
        log_every: 1, progress: false, log: [jsonl], device: cpu}}
"""
UNREAD = "refused before the weights are read"


class Replay(Runner):
    """The runner of this replay (the phases those of ``script``): its ``tiny.yaml``, and the peak RSS figures of
    the long-line rows."""

    def __init__(self, root: Path, jobs: int, script: Path) -> None:
        super().__init__(root, jobs, script)
        self.yaml = root / "tiny.yaml"
        self.baseline_rss: float | None = None
        self.long_line: dict[int, float] = {}  # peak RSS (MiB) of prepare by characters of the line


def write_inputs(root: Path) -> None:
    """The corpora, ``tiny.yaml`` and the bad corpus folders and YAML files (no gdds call)."""
    from gdds.data import shakespeare_documents

    docs = shakespeare_documents()
    for name, works, chars in (("corpus", docs[:6], 3000), ("corpus2", docs[6:12], 2000)):
        (root / name).mkdir()
        for i, doc in enumerate(works):
            (root / name / f"w{i:02d}.txt").write_text(doc[:chars])
    (root / "tiny.yaml").write_text(TINY_YAML.format(corpus=root / "corpus"))
    bad = root / "bad"
    text = {"tiny/hi.txt": b"hi", "nul/zeros.txt": b"\0" * 4096, "mixed_nul/nul.txt": b"\0" * 4096,
            "nodotxt/README.md": docs[0][:2000].encode(), "nodotxt/notes.TXT": docs[1][:2000].encode(),
            "latin1/latin.txt": ("caf\xe9 na\xefve " * 200).encode("latin-1"), "emptyfile/empty.txt": b"",
            "syn.yaml": b"train:\n  lr: [0.1\n", "list.yaml": b"- 1\n- 2\n"}
    for name, data in text.items():
        (bad / name).parent.mkdir(parents=True, exist_ok=True)
        (bad / name).write_bytes(data)
    for folder in ("mixed_nul", "latin1"):
        for doc in (root / "corpus").iterdir():
            shutil.copy(doc, bad / folder)
    line = " ".join(" ".join(d.split()) for d in docs)
    line = (line * (HUGE_LINE_BYTES // len(line) + 1))[:HUGE_LINE_BYTES]
    for folder, chars in (("halfline", HUGE_LINE_BYTES // 2), ("hugeline", HUGE_LINE_BYTES)):
        (bad / folder).mkdir()
        (bad / folder / "one.txt").write_text(line[:chars])
    (root / "exists").mkdir()
    (root / "file").write_text("a regular file: nothing can be created under it\n")
    (root / "work").mkdir()


def base_models(root: Path) -> None:
    """The base run and its model folders, and the other model (run in the set-up's child process)."""
    from gdds.engine.config import load_config
    from gdds.engine.model_folder import export_model
    from gdds.engine.train import train

    yaml = str(root / "tiny.yaml")
    train(load_config(yaml, []), root / "base" / "run")
    export_model(root / "base" / "run", root / "base" / "model")
    export_model(root / "base" / "run", root / "base" / "model-raw", weights="raw")
    train(load_config(yaml, [f"data.corpus={root / 'corpus2'}", "model.width=32", "train.max_steps=2"]),
          root / "other" / "run")
    export_model(root / "other" / "run", root / "other" / "model")
