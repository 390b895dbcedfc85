"""Every command's bad input ends in one clear line and a non-zero exit, never a traceback; ``--debug``
(or GDDS_DEBUG=1) shows the traceback instead."""
import sys

import pytest

from gdds.cli import main


def bad_inputs(tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    return [
        ["noise", "--kernels", "bogus"], ["noise", "--device", "gpu"], ["noise", "--times", "2"],
        ["prepare", "tiny", f"data.corpus={tmp_path}/missing/"], ["prepare", "nope"], ["prepare", "tiny", "x.y=1"],
        ["train", "--config", "tiny"], ["train", "--config", "tiny", "--out", str(tmp_path / "r"), "data.seq_len=abc"],
        ["train", "--resume", str(tmp_path / "missing")], ["train", "--config", str(tmp_path / "bad.yaml"),
                                                           "--out", str(tmp_path / "r2")],
        ["train", "--config", "tiny", "--out", str(tmp_path / "r3"), "train.batch_size=0"],
        ["sample", str(tmp_path / "missing")], ["sample", str(tmp_path / "exists")],
        ["eval", str(tmp_path / "missing")], ["eval", str(tmp_path), "--steps", "0"],
        ["export", str(tmp_path / "missing"), str(tmp_path / "out")],
        ["export", str(tmp_path / "missing"), str(tmp_path / "exists")],
        ["compare", "--out", str(tmp_path / "c"), "--base", "nope"], ["compare", "--out", str(tmp_path / "c"),
                                                                       "--methods", "bogus"],
        ["nll-gap", "--bogus"], ["bogus-command"],
    ]


def test_every_command_fails_in_one_line(tmp_path, capsys):
    for argv in bad_inputs(tmp_path):
        try:
            status = main(argv)
        except SystemExit as exc:  # usage errors: argparse exits with status 2
            status = exc.code
        err = capsys.readouterr().err
        assert status not in (0, None), argv
        assert "Traceback" not in err and "error" in err, (argv, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith("gdds") and len(last) > 20, (argv, err)


def test_unexpected_errors_name_their_type_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import gdds.cli.tools as tools

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(tools, "export_model", broken)
    assert main(["export", "run", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "KeyError" in err and "GDDS_DEBUG=1" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        main(["--debug", "export", "run", str(tmp_path / "out")])
    monkeypatch.setenv("GDDS_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["export", "run", str(tmp_path / "out")])


def exit_status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_bad_values_are_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    """A bad training value exits 2 naming its key before the data is read; a YAML syntax error names
    the file and line in one line; sampling and output options are checked before a model is loaded
    or anything is computed (the commands' compute is replaced by a failure to prove it)."""
    import gdds.cli.evaluation as evaluation
    import gdds.cli.tools as tools
    import gdds.cli.training as training

    def never(*args, **kwargs):
        raise AssertionError("computed before the bad input was refused")

    for module, name in [(training, "train"), (evaluation, "open_model"), (tools, "noise_demo")]:
        monkeypatch.setattr(module, name, never)
    (tmp_path / "syn.yaml").write_text("train:\n  lr: [0.1\n")
    (tmp_path / "file").write_text("")
    out, folder = str(tmp_path / "r"), str(tmp_path)
    cases = [
        (["train", "--config", "tiny", "--out", out, "train.grad_clip=-1"], "train.grad_clip must be in (0, inf]"),
        (["train", "--config", "tiny", "--out", out, "seed=-1"], "seed must be in [0, 4294967295]; got -1"),
        (["train", "--config", str(tmp_path / "syn.yaml"), "--out", out], "syn.yaml: invalid YAML at line 3"),
        (["sample", "RUN", "--top-p", "2"], "argument --top-p: the nucleus top-p must lie in (0, 1]; got 2"),
        (["sample", "RUN", "--top-p", "0"], "--top-p"),
        (["sample", "RUN", "--temperature", "0"], "argument --temperature: the temperature must be a positive finite"),
        (["sample", "RUN", "--top-k", "0"], "argument --top-k: top-k must be a positive integer; got 0"),
        (["sample", "RUN", "--top-k", "2.5"], "argument --top-k: not a number: '2.5'"),
        (["sample", "RUN", "--min-p", "1.5"], "argument --min-p: min-p must lie in [0, 1]; got 1.5"),
        (["sample", "RUN", "--threshold", "0"], "argument --threshold: the confidence threshold must lie in (0, 1]"),
        (["sample", "RUN", "--eta", "1.5"], "argument --eta: eta must lie in [0, 1]; got 1.5"),
        (["sample", "RUN", "--score", "random"], "argument --score: invalid choice: 'random'"),
        (["eval", "RUN", "--sample-top-p", "1", "1.5"], "--sample-top-p"),
        (["sample", "RUN", "--out", folder], f"--out {folder} is a folder"),
        (["sample", "RUN", "--out", f"{folder}/file/s.json"], "cannot write to"),
        (["sample", "RUN", "--steps", "100000000"], "--steps in [1, 100,000]"),
        (["sample", "RUN", "--corrector-steps", "-1"], "--corrector-steps must be an integer >= 0; got -1"),
        (["sample", "RUN", "--corrector-delta", "0"], "--corrector-delta must lie in (0, 1]; got 0"),
        (["sample", "RUN", "--fitted-grid", f"{folder}/file"], f"cannot read the evaluation {folder}/file"),
        (["sample", "RUN", "--fitted-grid", f"{folder}/file", "--spacing", "t"], "drop --spacing"),
        (["eval", "RUN", "--out", f"{folder}/file/eval"], f"cannot write to {folder}/file/eval (Not a directory)"),
        (["noise", "--out", f"{folder}/file/noise"], "cannot write to"),
    ]
    for argv, message in cases:
        assert exit_status(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "report it" not in err, (argv, err)
        assert len(err.strip().splitlines()[-1]) > 20 and err.strip().splitlines()[-1].startswith("gdds")
    assert not (tmp_path / "r").exists()


def test_a_warning_prints_as_one_gdds_line(monkeypatch, capsys):
    """A warning during a command (e.g. a cache folder that cannot be written) prints as one
    `gdds: warning: ...` line, without Python's file, line number and source line."""
    import warnings

    import gdds.cli.evaluation as cli_eval

    def warn(args):
        warnings.warn("could not cache the kNN graph in /ro (Read-only file system);\n kept in memory", stacklevel=1)
        return 0

    monkeypatch.setattr(cli_eval, "run_sample", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
        assert main(["sample", "anything"]) == 0
    assert capsys.readouterr().err == ("gdds: warning: could not cache the kNN graph in /ro (Read-only file system); "
                                       "kept in memory\n")
