"""Model folders that were damaged, edited or swapped, and exports killed half-way (issue 24): a kill at
any step of ``gdds export --overwrite`` or ``save_pretrained`` leaves the old folder or the new one,
whole and loadable; a folder reads only its own files; its weights are checked against the declared
network before it is built; its files are hashed at export and verified on load; every bad folder ends in
one line that names the file."""
import contextlib
import json
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import pytest

import gdds
from gdds import files
from gdds.cli import main
from gdds.data import CharTokenizer, load_tokenizer
from gdds.data.tokenizers.trained import BPETokenizer
from gdds.engine.config import ConfigError
from gdds.engine.model_files import ModelFolderError
from gdds.engine.model_folder import export_model
from helpers import micro_run

OPENED: list[str] | None = None  # the paths opened while recording (an audit hook sees every open())


def _audit(event, args):
    if event == "open" and OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def recording():
    """The list of the paths opened inside the ``with`` block."""
    global OPENED
    OPENED = seen = []
    try:
        yield seen
    finally:
        OPENED = None


def never_opened(seen: list[str], path: Path) -> bool:
    return all(Path(p).resolve() != path.resolve() for p in seen)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A micro run with the semantic kernel (so a kernel.safetensors), exported twice: ``old`` with the raw
    weights, ``new`` with the EMA (different weights and config.json)."""
    root = tmp_path_factory.mktemp("folders")
    run = micro_run(root, "train.max_steps=2", "process.kernel=semantic", "process.embeddings=cooccurrence",
                    "process.kernel_args={k: 8}")
    return run, export_model(run, root / "old", weights="raw"), export_model(run, root / "new")


def contents(folder: Path) -> dict[str, str]:
    """Every file of ``folder``: its SHA-256 by relative name."""
    return {str(p.relative_to(folder)): files.sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def edit_config(folder: Path, change) -> None:
    meta = json.loads((folder / "config.json").read_text())
    change(meta)
    (folder / "config.json").write_text(json.dumps(meta))


class Killed(BaseException):
    """The process died here (nothing after it reaches the disk)."""


def kill_at(monkeypatch, k: int) -> None:
    """From the ``k``-th rename, replace, unlink, rmdir or folder swap on, every such call dies before acting:
    the disk stays as a SIGKILL there would leave it (cleanup code cannot run either)."""
    count = [0]

    def dying(fn):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] >= k:
                raise Killed
            return fn(*args, **kwargs)
        return call

    for module, name in [(os, "rename"), (os, "replace"), (os, "unlink"), (os, "rmdir"), (files, "_exchange")]:
        monkeypatch.setattr(module, name, dying(getattr(module, name)))


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
@pytest.mark.parametrize("how", ["gdds export --overwrite", "save_pretrained(overwrite=True)"])
def test_a_kill_at_any_step_of_an_overwrite_leaves_a_whole_loadable_model_folder(folders, tmp_path, monkeypatch,
                                                                               swap, how):
    run, old, new = folders
    if swap == "two renames":
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    else:
        assert files._exchange(copy(old, tmp_path / "a"), copy(new, tmp_path / "b")), "renameat2 unsupported here"
    before, after = contents(old), contents(new)
    target = tmp_path / "model"
    source = gdds.load(new) if how.startswith("save") else None

    def hidden():
        return sorted(p for p in tmp_path.iterdir() if p.name.startswith(".model."))

    def overwrite(k):
        """The overwrite, killed at its ``k``-th step; whether it finished."""
        with monkeypatch.context() as m:
            kill_at(m, k)
            try:
                if source is None:
                    main(["export", str(run), str(target), "--overwrite"])
                else:
                    source.save_pretrained(target, overwrite=True)
                return True
            except Killed:
                return False

    outcomes, left = [], {}
    for k in range(1, 200):
        for path in [target, *hidden()]:  # every kill point of the same overwrite: the old folder, nothing else
            shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(old, target)
        finished = overwrite(k)
        left[k] = hidden()
        if not target.exists():  # only between the two renames of the fallback
            assert swap == "two renames" and contents(files.interrupted_replace(target)) == before
            with pytest.raises(ModelFolderError, match="mv .*old-"):
                gdds.load(target)
            with pytest.raises(ConfigError, match="exists"):  # the next export puts it back first
                export_model(run, target)
            outcomes.append("restored")
        now = contents(target)
        assert now in (before, after), (k, sorted(now))
        gdds.load(target)
        outcomes.append("new" if now == after else "old")
        if finished:
            break
    assert finished and outcomes[-1] == "new" and "old" in outcomes and "new" in outcomes[:-1] and not left[k]
    assert ("restored" in outcomes) == (swap == "two renames")
    k = max(k for k in left if left[k])  # what a kill left (a half-deleted old folder) goes at the next overwrite
    overwrite(k)
    assert hidden() and overwrite(10**6) and not hidden() and contents(target) == after


def test_a_saved_tokenizer_reads_only_its_own_files(tmp_path):
    tok = BPETokenizer.train(["to be or not to be, that is the question"] * 20, 300)
    folder = tok.save(tmp_path / "tok")
    outside = tmp_path / "outside.json"
    shutil.copy(folder / json.loads((folder / "gdds_tokenizer.json").read_text())["file"], outside)
    meta = json.loads((folder / "gdds_tokenizer.json").read_text())
    for name in (str(outside), "../outside.json", "sub/../../outside.json"):
        (folder / "gdds_tokenizer.json").write_text(json.dumps({**meta, "file": name}))
        with recording() as seen, pytest.raises(ValueError, match="reads only its own files"):
            load_tokenizer(folder)
        assert never_opened(seen, outside)
    (folder / "gdds_tokenizer.json").write_text(json.dumps(meta))
    assert load_tokenizer(folder).identity() == tok.identity()


def test_a_model_folder_reads_nothing_outside_itself(folders, tmp_path):
    _, _, new = folders
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"\x93NUMPY")  # opened by the former fallback to process.embeddings
    for drop_hashes in (False, True):  # a folder with recorded hashes, and one exported before them
        folder = copy(new, tmp_path / f"no-kernel-{drop_hashes}")
        (folder / "kernel.safetensors").unlink()

        def embeddings_outside(meta, drop=drop_hashes):
            meta["config"]["process"]["embeddings"] = str(outside)
            if drop:
                del meta["files"]

        edit_config(folder, embeddings_outside)
        with recording() as seen, pytest.raises(ModelFolderError, match="kernel.safetensors is missing"), \
                warnings.catch_warnings(record=True):
            gdds.load(folder)
        assert never_opened(seen, outside)
    # a file of the folder that is a link out of it, and a hashed name that leaves it
    folder = copy(new, tmp_path / "link")
    shutil.move(folder / "unigram.safetensors", tmp_path / "elsewhere.safetensors")
    (folder / "unigram.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ModelFolderError, match="is a link to .*outside the model folder"):
        gdds.load(folder)
    folder = copy(new, tmp_path / "named")
    edit_config(folder, lambda m: m["files"].update({"../outside.npy": {"bytes": 6, "sha256": "0"}}))
    with recording() as seen, pytest.raises(ModelFolderError, match="outside the model folder"):
        gdds.load(folder)
    assert never_opened(seen, outside)
    # a BPE tokenizer whose "file" leads out (with config.json's hash updated to match)
    folder = copy(new, tmp_path / "bpe")
    meta_file = folder / "gdds_tokenizer" / "gdds_tokenizer.json"
    meta_file.write_text(json.dumps({"kind": "bpe", "file": str(outside), "identity": {}}))
    edit_config(folder, lambda m: m["files"].update({"gdds_tokenizer/gdds_tokenizer.json": {
        "bytes": meta_file.stat().st_size, "sha256": files.sha256_file(meta_file)}}))
    with recording() as seen, pytest.raises(ModelFolderError, match="reads only its own files"):
        gdds.load(folder)
    assert never_opened(seen, outside)


def test_a_hugging_face_cache_snapshot_whose_files_link_to_its_blobs_loads(folders, tmp_path):
    _, _, new = folders
    repo = tmp_path / "models--someone--model"
    snapshot = repo / "snapshots" / "0123abcd"
    for path in sorted(new.rglob("*")):
        relative = path.relative_to(new)
        if path.is_dir():
            (snapshot / relative).mkdir(parents=True)
            continue
        blob = repo / "blobs" / files.sha256_file(path)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, blob)
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / relative).symlink_to(os.path.relpath(blob, (snapshot / relative).parent))
    assert gdds.load(snapshot).sample(num=1, length=16, steps=2) == gdds.load(new).sample(num=1, length=16, steps=2)


def test_weights_are_checked_against_the_declared_network_before_it_is_built(folders, tmp_path):
    _, _, new = folders
    folder = copy(new, tmp_path / "huge")
    edit_config(folder, lambda m: m["config"]["model"].update(layers=96, width=16384))
    peak, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ModelFolderError, match="config.json declares a network of .* that model.safetensors does not"):
        gdds.load(folder)  # 96 layers of width 16384: over 300 billion numbers, 1.2 TB in float32
    assert time.perf_counter() - start < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500_000  # KiB: no big allocation
    folder = copy(new, tmp_path / "long")
    edit_config(folder, lambda m: m["config"]["data"].update(seq_len=10**9))
    with pytest.raises(ModelFolderError, match=r"config.json: data.seq_len must be in \[3, 65536\]"):
        gdds.load(folder)  # the position tables' size is bounded before anything is built


def test_every_file_is_hashed_at_export_and_verified_on_load(folders, tmp_path):
    _, _, new = folders
    meta = json.loads((new / "config.json").read_text())
    assert set(meta["files"]) == set(contents(new)) - {"config.json", "README.md"}
    other = CharTokenizer.from_texts(["another model's text, with other characters: QXZ"])
    folder = copy(new, tmp_path / "other-tokenizer-json")
    other.hf_tokenizer().save(str(folder / "tokenizer.json"))
    with pytest.raises(ModelFolderError, match=r"tokenizer.json is not the file this model was exported with"):
        gdds.load(folder)
    for drop_hashes, message in ((False, "gdds_tokenizer.json is not the file"),
                                 (True, "gdds_tokenizer is not the tokenizer this model was trained with")):
        folder = copy(new, tmp_path / f"other-gdds-tokenizer-{drop_hashes}")
        shutil.rmtree(folder / "gdds_tokenizer")
        other.save(folder / "gdds_tokenizer")
        if drop_hashes:
            edit_config(folder, lambda m: m.pop("files"))
        with pytest.raises(ModelFolderError, match=message), warnings.catch_warnings(record=True):
            gdds.load(folder)
    folder = copy(new, tmp_path / "added")
    (folder / "gdds_tokenizer" / "extra.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="extra.json is not among the files config.json records"):
        gdds.load(folder)
    folder = copy(new, tmp_path / "old-format")
    (folder / "README.md").write_text("an edited model card")  # the card is the author's to edit
    edit_config(folder, lambda m: m.pop("files"))
    with pytest.warns(UserWarning, match="recorded no file hashes"):
        gdds.load(folder)


def damaged(folder: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of ``folder``, each damaged one way, by what was done to it."""
    out = {}

    def variant(name, change):
        out[name] = copy(folder, tmp_path / name)
        change(out[name])

    weights = (folder / "model.safetensors").read_bytes()
    for name, data in (("half weights", weights[:len(weights) // 2]), ("random weights", os.urandom(len(weights))),
                       ("empty weights", b""), ("header only", weights[:8])):
        variant(name, lambda f, d=data: (f / "model.safetensors").write_bytes(d))
    text = (folder / "config.json").read_text()
    variant("truncated config", lambda f: (f / "config.json").write_text(text[:len(text) // 2]))
    variant("config a list", lambda f: (f / "config.json").write_text("[]"))
    variant("config of another format", lambda f: (f / "config.json").write_text('{"format": "x"}'))
    variant("no weights", lambda f: (f / "model.safetensors").unlink())
    return out


def test_a_damaged_model_folder_fails_in_one_line_that_names_the_file(folders, tmp_path, capsys):
    _, _, new = folders
    for what, folder in damaged(new, tmp_path).items():
        file = "config.json" if "config" in what else "model.safetensors"
        with pytest.raises(ModelFolderError, match=file):
            gdds.load(folder)
        assert main(["sample", str(folder)]) == 1, what
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{folder}/{file}" in err and "report it" not in err, (what, err)
    for name in ("half weights", "random weights", "empty weights"):  # hashes aside: the header check alone
        folder = tmp_path / name
        edit_config(folder, lambda m: m.pop("files"))
        with pytest.raises(ModelFolderError, match="model.safetensors is truncated or is not a safetensors file"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the folder has no hashes now
            gdds.load(folder)


def test_exporting_a_model_folder_copies_it(folders, tmp_path, capsys):
    _, old, new = folders
    assert main(["export", str(new), str(tmp_path / "copy")]) == 0
    assert contents(tmp_path / "copy") == contents(new)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["export", str(new), str(new), "--overwrite"])
    assert "is the model folder being exported" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(new), str(tmp_path / "raw"), "--weights", "raw"])
    assert "holding ema weights only" in capsys.readouterr().err
    assert main(["export", str(old), str(tmp_path / "copy"), "--overwrite"]) == 0
    assert contents(tmp_path / "copy") == contents(old)
    broken = copy(new, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{}")
    assert main(["export", str(broken), str(tmp_path / "copy"), "--overwrite"]) == 1  # never spreads a damaged copy
    assert contents(tmp_path / "copy") == contents(old)
