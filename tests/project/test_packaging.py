"""`pip install gdds` gets the whole package: the wheel built from this tree holds every file of
``src/gdds`` (presets included: ``pyproject.toml`` lists their folders, and a new folder left out of
that list would be missing only from installed copies, never from this editable tree), and the
installed copy finds its presets and the code fingerprint without the source tree."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "gdds"

pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the environment")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this tree, built offline (no build isolation: nothing is downloaded) from a copy
    without the editable install's ``gdds.egg-info``, whose list of files would hide a file that
    ``pyproject.toml`` leaves out (as it would for a release built from a clean checkout)."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", str(tree), "-w", str(out)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("gdds-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package(wheel):
    shipped = set(zipfile.ZipFile(wheel).namelist())
    files = {f"gdds/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert any(f.endswith(".yaml") for f in files)
    assert files - shipped == set(), "add these files' folders to [tool.setuptools.package-data]"


def test_the_installed_copy_works_without_the_source_tree(wheel, tmp_path):
    """Installed from the wheel and imported away from this tree: every shipped preset reads and the
    code fingerprint is computed from the installed files."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    probe = (
        "import gdds, pathlib\n"
        "from gdds.engine import config\n"
        "from gdds.engine.evaluation import compare, decoding\n"
        "from gdds.version import code_fingerprint\n"
        f"assert pathlib.Path(gdds.__file__).is_relative_to({str(target)!r}), gdds.__file__\n"
        "for name in config.preset_names():\n"
        "    config.load_config(name)\n"
        "for name in compare.compare_preset_names():\n"
        "    compare.read_compare_preset(name)\n"
        "for name in decoding.decoding_preset_names():\n"
        "    decoding.read_decoding_preset(name)\n"
        "print(len(config.preset_names()), len(compare.compare_preset_names()),\n"
        "      len(decoding.decoding_preset_names()), code_fingerprint())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    runs, comparisons, decodings, fingerprint = done.stdout.split()
    from gdds.engine import config
    from gdds.engine.evaluation import compare, decoding
    from gdds.version import code_fingerprint
    here = (config.preset_names(), compare.compare_preset_names(), decoding.decoding_preset_names())
    assert (int(runs), int(comparisons), int(decodings)) == tuple(map(len, here)) and min(map(len, here)) >= 1
    assert fingerprint == code_fingerprint()  # the installed files are this tree's
