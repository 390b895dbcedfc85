"""Every command's bad input ends in one clear line and a non-zero exit, never a traceback; ``--debug``
(or GDDS_DEBUG=1) shows the traceback instead."""
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
