"""`gdds noise` and its parts: the Shakespeare lines, the WordPiece tokenizer, the
noising demo (reproducible, monotone under masking, semantic jumps land on
neighbours), the text and PNG outputs and the command line's error handling."""
import os
import re
import subprocess
import sys

import pytest

from gdds.cli import main
from gdds.cli.noise_demo import noise_demo, render_text, save_figure, save_text
from gdds.data import (
    WORDPIECE_MASK_ID,
    WORDPIECE_VOCAB_SIZE,
    decode_pieces,
    encode,
    shakespeare_line,
    shakespeare_lines,
    wordpiece,
)
from gdds.minilm import minilm_kernel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG = (
    "Unthrifty loveliness, why dost thou spend upon thy self thy beauty's legacy? Nature's bequest gives "
    "nothing, but doth lend, and being frank she lends to those are free: then, beauteous niggard, why dost "
    "thou abuse the bounteous largess given thee to give? Profitless usurer, why dost thou use so great a sum "
    "of sums, yet canst not live?"
)


@pytest.fixture(scope="module")
def semantic_kernel():
    """The MiniLM semantic kernel, its kNN graph built once into the session's private cache
    (``conftest.private_cache``), which every semantic demo of this module then reads, and
    ``tests/math/test_minilm.py`` too."""
    return minilm_kernel(progress=False)


def test_shakespeare_lines_are_clean_dialogue():
    lines = shakespeare_lines()
    assert len(lines) > 50_000
    assert lines == shakespeare_lines()  # deterministic order
    for line in lines:
        assert 6 <= len(line.split()) <= 25
        assert not re.search(r"gutenberg|\be-?text\b|copyright|licen[cs]e (agreement|terms)", line, re.I), line
        assert "[" not in line and "]" not in line, line  # no stage directions
        assert not re.search(r"\b[A-Z]{3,}\b", line), line  # no speaker names or names in directions
        assert line == " ".join(line.split())
    assert not any(re.match(r"(act|scene)\b", line, re.I) for line in lines)
    assert "To be, or not to be,--that is the question:--" in lines
    short = shakespeare_lines(2, 3)
    assert short and all(2 <= len(line.split()) <= 3 for line in short)
    assert shakespeare_line(0) == shakespeare_line(0) in lines
    assert len({shakespeare_line(s) for s in range(10)}) > 5
    with pytest.raises(ValueError):
        shakespeare_lines(5, 4)


@pytest.mark.parametrize("sentence", [
    "Who's there? Nay, answer me: stand, and unfold yourself.",
    "Unthrifty loveliness, why dost thou spend upon thy self thy beauty's legacy?",
    "  Shall I compare thee to a summer's day?  ",
])
def test_wordpiece_round_trip(sentence):
    tok = wordpiece()
    assert tok.get_vocab_size() == WORDPIECE_VOCAB_SIZE == 30522
    assert tok.token_to_id("[MASK]") == WORDPIECE_MASK_ID == 103
    ids = encode(sentence)
    assert tok.token_to_id("[CLS]") not in ids and tok.token_to_id("[SEP]") not in ids
    assert all(0 <= i < WORDPIECE_VOCAB_SIZE for i in ids)
    pieces = decode_pieces(ids)
    assert len(pieces) == len(ids) and any(p.startswith("##") for p in decode_pieces(encode(LONG)))
    assert "".join(p.removeprefix("##") for p in pieces) == "".join(sentence.lower().split())
    assert len(encode(LONG * 3)) > 128  # no truncation (the file's default is 128)
    with pytest.raises(ValueError):
        decode_pieces([WORDPIECE_VOCAB_SIZE])


def test_noise_demo_is_reproducible_and_masking_grows_with_t():
    lines = shakespeare_lines(8, 12)
    sentences = [" ".join(lines[i:i + 3]) for i in (0, 1000, 2000, 3000)]
    early = late = total = 0
    for sentence in sentences:
        demo = noise_demo(sentence, times=(0.1, 0.5, 0.9), kernels=("mask", "uniform"), seed=7)
        assert demo == noise_demo(sentence, times=(0.1, 0.5, 0.9), kernels=("mask", "uniform"), seed=7)
        assert demo.tokens == decode_pieces(encode(sentence)) and demo.times == (0.1, 0.5, 0.9)
        assert list(demo.rows) == ["mask", "uniform"]
        for name, rows in demo.rows.items():
            for row in rows:
                assert len(row.tokens) == len(row.changed) == len(demo.tokens)
                for tok, clean, changed in zip(row.tokens, demo.tokens, row.changed):
                    assert changed == (tok != clean)
                    if name == "mask" and changed:
                        assert tok == "[MASK]"
        mask = demo.rows["mask"]
        early, late, total = early + mask[0].n_changed, late + mask[2].n_changed, total + len(demo.tokens)
    assert total > 100
    assert early / total < 0.25 < 0.75 < late / total  # expected fractions 0.1 and 0.9
    other = noise_demo(sentences[0], times=(0.5, 0.9), kernels=("uniform",), seed=8)
    same = noise_demo(sentences[0], times=(0.5, 0.9), kernels=("uniform",), seed=7)
    assert other.rows != same.rows


def test_noise_demo_defaults_to_a_shakespeare_line():
    demo = noise_demo(times=(0.5,), kernels=("mask",), seed=3)
    assert demo.sentence == shakespeare_line(3)
    assert demo.schedule == "LogLinear(eps=0.001)"


@pytest.mark.parametrize("kwargs", [
    dict(times=(0.0,)), dict(times=(1.2,)), dict(times=(float("nan"),)), dict(times=()),
    dict(kernels=("gaussian",)), dict(kernels=("mask", "mask")), dict(sentence="   "),
])
def test_noise_demo_rejects_bad_input(kwargs):
    kwargs = {"sentence": "to be or not to be", "kernels": ("mask",), **kwargs}
    with pytest.raises(ValueError):
        noise_demo(**kwargs)


def test_semantic_jumps_land_on_embedding_neighbours(semantic_kernel):
    """At small t a semantic jump goes to one of the 64 MiniLM neighbours (the teleport
    weight is ~1%), a uniform jump almost never does."""
    neighbours = semantic_kernel.knn.neighbours
    ids = encode(LONG)
    times = (0.1, 0.2, 0.3)
    demo = noise_demo(LONG, times=times, kernels=("semantic", "uniform"), seed=1)
    tok = wordpiece()
    for name, low, high in (("semantic", 0.6, 1.0), ("uniform", 0.0, 0.1)):
        hits = jumps = 0
        for row in demo.rows[name]:
            for clean, noisy, changed in zip(ids, row.tokens, row.changed):
                if changed:
                    jumps += 1
                    hits += tok.token_to_id(noisy) in neighbours[clean].tolist()
        assert jumps >= 10, name
        assert low <= hits / jumps <= high, (name, hits, jumps)


def test_render_text_marks_changes_with_or_without_ansi():
    demo = noise_demo("to be or not to be that is the question", times=(0.9,), kernels=("mask",), seed=0)
    plain, ansi = render_text(demo), render_text(demo, ansi=True)
    assert "\033" not in plain and "*[MASK]*" in plain
    assert "\033[" in ansi and "*[MASK]*" not in ansi
    assert "to be or not to be that is the question" in plain and "t=0.9" in plain


def test_cli_writes_figure_and_text(semantic_kernel, tmp_path, capsys):
    sentence = "Now is the winter of our discontent made glorious summer by this sun of York"
    out = tmp_path / "noise"
    assert main(["noise", sentence, "--out", str(out), "--t", "0.2", "0.8", "--seed", "2"]) == 0
    png, txt = out / "noise.png", out / "noise.txt"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    text = txt.read_text(encoding="utf-8")
    assert sentence in text and "\033" not in text
    for title in ("mask", "uniform", "semantic"):
        assert title in text
    printed = capsys.readouterr().out
    assert "t=0.2" in printed and "t=0.8" in printed and str(png) in printed and str(txt) in printed
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_cli_default_line_without_figure(tmp_path):
    assert main(["noise", "--kernels", "mask", "--out", str(tmp_path), "--no-figure"]) == 0
    assert not (tmp_path / "noise.png").exists()
    assert shakespeare_line(0) in (tmp_path / "noise.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv", [
    [], ["noise", "--t", "0"], ["noise", "--t", "1.5"], ["noise", "--t", "abc"], ["noise", "--t", "nan"],
    ["noise", "--kernels", "gaussian"], ["noise", ""], ["noise", "--seed", "x"], ["noise", "--t", "0.5", "0.5"],
    ["noise", "\x01"], ["frobnicate"],
])
def test_cli_bad_arguments_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path)] if argv[:1] == ["noise"] else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_save_figure_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    demo = noise_demo("to be or not to be", times=(0.5,), kernels=("mask",))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install gdds\[plot\]"):
        save_figure(demo, tmp_path / "noise.png")
    assert save_text(demo, tmp_path / "noise.txt").read_text(encoding="utf-8") == render_text(demo)


def test_python_dash_m_gdds():
    done = subprocess.run([sys.executable, "-m", "gdds", "noise", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--kernels" in done.stdout
