"""gdds's networks for ``transformers`` (``AutoModel.from_pretrained(folder, trust_remote_code=True)``).

Written by ``gdds export`` into a model folder beside ``layers_gdds.py`` and ``configuration_gdds.py``;
self-contained (``torch`` and ``transformers`` only, no gdds). ``config.json``'s ``auto_map`` names the class
of the folder's network (``config.network``), each with gdds's logits on the same input (weights from
``model.safetensors``; held to gdds by ``tests/engine/test_hf_modeling.py``):

- ``DiT`` -> :class:`GddsModel`: ``model(input_ids [B, L], t) -> logits [B, L, vocab_size]``;
- ``BlockDiT`` -> :class:`GddsBlockModel` (block diffusion, blocks of ``config.block_size``):
  ``model(input_ids, t, x0=None)``, ``t`` a number, ``[B]`` or one time per block ``[B, n_blocks]``, ``x0`` the
  clean sequence (needed with more than one block; only the clean blocks before each noised block are read);
- ``CausalLM`` -> :class:`GddsCausalLM` (also ``AutoModelForCausalLM``, so ``generate`` and perplexity tools
  work): ``model(input_ids).logits [B, L, V]`` in ``transformers``' convention (row ``i`` predicts token
  ``i + 1``); ``model.gdds_logits(input_ids)`` is gdds's (row ``i`` predicts token ``i`` from the tokens
  before it, the first one from a learned start token);
- ``TwoStream`` -> :class:`GddsTwoStreamModel` (the Campbell estimator's network):
  ``model.snapshot(input_ids, t) -> logits [B, L, vocab_size]`` is the denoiser; ``model(tokens, positions,
  start, end, q_pos, q_time)`` is the pieces-and-queries form it is trained in.

What the logits mean. For the diffusion networks ``input_ids`` is ``x_t``, a sequence noised by the forward
process to time ``t`` in [0, 1] (0 = data, 1 = fully noised). The process is ``config.process``
(``config.json["process"]``: the schedule, the kernel and their parameters; ``special_ids["mask"]`` is the
absorbing state of a mask kernel); ``config.method`` and ``config.parametrization`` say how the logits
become the model's prediction:

- methods ``gdds`` / ``elbo``, parametrization ``mean``: ``softmax(logits)`` is the predicted distribution of
  the clean token ``x_0``; the reverse step is the exact posterior of the forward process averaged over it;
- parametrization ``forward`` / ``forward-surrogate``: ``softmax(logits)`` is then pushed through the forward
  process (the clean-token prediction noised to time ``t``), gdds's jump-states parametrization;
- methods ``jump`` / ``campbell``: the logits are the reverse jump kernel ``J(z | x_t)``, a softmax over
  ``z != x_t`` (the current token's logit is ignored);
- method ``ar``: no process; exact next-token logits.

Sampling and the likelihood bound need the process itself: ``gdds.load(folder)`` gives them
(``model.sample``, ``model.nll_bound``). Token ids: ``AutoTokenizer.from_pretrained(folder,
trust_remote_code=True)`` gives ``tokenizer.json``'s ids; ``model.model_ids(ids)`` turns them into the
network's (the same ids, unless the model has a compact vocabulary: then ``config.compact_full_ids[c]`` is the
tokenizer id of model id ``c``).
"""
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_gdds import GddsBlockConfig, GddsCausalLMConfig, GddsConfig, GddsTwoStreamConfig
from .layers_gdds import (
    Block,
    DiTNetwork,
    QueryBlock,
    add_trunk,
    block_mask,
    dit_logits,
    output,
    rotary,
    self_attention_stream,
    times,
)


class GddsPreTrainedModel(PreTrainedModel):
    """What every gdds network shares here: its configuration, no initialisation (every weight comes from
    ``model.safetensors``), the tied head, and :meth:`model_ids`."""

    config_class = GddsConfig
    base_model_prefix = "gdds"
    _no_split_modules = ("Block", "QueryBlock")
    network = "DiT"  # config.network of the folders this class loads
    prefix = ""  # where the trunk's parameters are (gdds's names)

    def __init__(self, config):
        super().__init__(config)
        if config.network != self.network:
            raise ValueError(f"this model folder holds a {config.network} network; {type(self).__name__} is "
                             f"the {self.network}: load it with AutoModel and config.json's auto_map")
        self.a = config.architecture
        self.vocab_size = self.a["vocab_size"]
        if self.a["tie_weights"]:
            self._tied_weights_keys = {f"{self.prefix}head.weight": f"{self.prefix}embed.weight"}

    def _init_weights(self, module):
        """Every weight comes from ``model.safetensors``; nothing is initialised."""

    def check_length(self, length):
        if self.a["max_len"] < length:
            raise ValueError(f"sequence length {length} exceeds the network's max_len = {self.a['max_len']}")

    def model_ids(self, tokenizer_ids):
        """The network's ids of ``AutoTokenizer`` ids (a compact vocabulary keeps only the ids seen in training)."""
        ids = torch.as_tensor(tokenizer_ids)
        full = self.config.compact_full_ids
        if full is None:
            return ids
        table = torch.full((max(full) + 1,), -1, dtype=torch.long, device=ids.device)
        table[torch.as_tensor(full, device=ids.device)] = torch.arange(len(full), device=ids.device)
        out = table[ids.clamp(0, len(table) - 1)].masked_fill((ids < 0) | (ids >= len(table)), -1)
        if (out < 0).any():
            raise ValueError("some token ids are not in the model's compact vocabulary (never seen in training)")
        return out


class GddsModel(GddsPreTrainedModel):
    """gdds's bidirectional DiT denoiser: ``forward(input_ids [B, L], t) -> logits [B, L, vocab_size]``."""

    def __init__(self, config):
        super().__init__(config)
        add_trunk(self, self.a, self.vocab_size, Block)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, t, **kwargs):
        """Logits of the clean token given ``x_t = input_ids`` (token ids) and times ``t`` in [0, 1]."""
        self.check_length(input_ids.shape[1])
        return dit_logits(self, self.a, self.vocab_size, input_ids, t)


class GddsBlockModel(GddsModel):
    """gdds's block-diffusion network (``BlockDiT``, BD3-LM): ``forward(input_ids [B, L], t, x0) -> logits
    [B, L, vocab_size]`` of the clean tokens of every noised block, block ``k`` given the clean blocks before it.

    With more than one block the network reads the noised and the clean sequence side by side (``2L`` tokens,
    both at positions ``0..L-1``) under block diffusion's mask, each noised block conditioned on its own time
    and the clean tokens on ``t = 0``; with one block it is the DiT."""

    config_class, network = GddsBlockConfig, "BlockDiT"

    def forward(self, input_ids, t, x0=None, **kwargs):
        """``t``: a number, ``[B]`` or ``[B, n_blocks]``; ``x0 [B, L]``: the clean sequence (more than one block)."""
        B, L = input_ids.shape
        self.check_length(L)
        size = self.config.block_size
        nb = -(-L // size)
        t = times(t, B, input_ids.device, (B, nb))
        if nb == 1:
            c = F.silu(self.time_embed(t[:, 0]))[:, None]
            h = self_attention_stream(self, self.a, input_ids, c, torch.arange(L, device=input_ids.device))
            return output(self, h, c, self.vocab_size)
        if x0 is None or x0.shape != input_ids.shape:
            raise ValueError(f"with {nb} blocks the clean sequence x0 [B, L] = [{B}, {L}] is needed")
        which = torch.arange(L, device=input_ids.device) // size
        conds = F.silu(self.time_embed(torch.cat((t.reshape(-1), t.new_zeros(1)))))
        c = torch.cat((conds[:-1].view(B, nb, -1)[:, which], conds[-1].expand(B, L, -1)), dim=1)
        positions = torch.arange(L, device=input_ids.device).repeat(2)
        h = self_attention_stream(self, self.a, torch.cat((input_ids, x0), dim=1), c, positions,
                                  block_mask(L, size, input_ids.device))
        return output(self, h[:, :L], c[:, :L], self.vocab_size)


class GddsCausalLM(GddsPreTrainedModel, GenerationMixin):
    """gdds's autoregressive model (``CausalLM``: the DiT with causal attention, at ``t = 0``, reading a
    learned start token, id ``vocab_size``, before the sequence). ``forward`` follows ``transformers``:
    ``logits[:, i]`` predicts token ``i + 1``, and ``labels`` give the mean next-token cross-entropy (the first
    token unscored); :meth:`gdds_logits` is gdds's own reading, which scores the first token too."""

    config_class, network = GddsCausalLMConfig, "CausalLM"
    prefix = "net."

    def __init__(self, config):
        super().__init__(config)
        self.net = DiTNetwork(self.a, self.vocab_size + 1)
        self.post_init()

    def get_input_embeddings(self):
        return self.net.embed

    def get_output_embeddings(self):
        return self.net.head

    def _with_start(self, input_ids):
        start = input_ids.new_full((input_ids.shape[0], 1), self.vocab_size)
        return self.net(torch.cat((start, input_ids), dim=1), 0.0)[..., :self.vocab_size]

    def gdds_logits(self, input_ids):
        """gdds's ``CausalLM(x)``: ``[B, L, V]``, row ``i`` predicts token ``i`` from the tokens before it."""
        self.check_length(input_ids.shape[1])
        return self._with_start(input_ids[:, :-1])

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """``transformers``' causal-LM call. At the full length ``max_len`` the last row (the token after the
        window) comes from a position the network never trained on; every other row is gdds's."""
        self.check_length(input_ids.shape[1])
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("padding is not supported: give sequences of one length (attention_mask all ones)")
        logits = self._with_start(input_ids)[:, 1:]
        loss = None if labels is None else F.cross_entropy(
            logits[:, :-1].reshape(-1, self.vocab_size).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    @classmethod
    def _supports_default_dynamic_cache(cls):
        """No key/value cache: ``generate`` runs the whole sequence at every step, as gdds does."""
        return False

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        """The whole sequence at every step (no key/value cache)."""
        return {"input_ids": input_ids}


class GddsTwoStreamModel(GddsPreTrainedModel):
    """gdds's two-stream network (``TwoStream``): queries at ``(position, time)`` read the pieces of a path
    active at their time. :meth:`snapshot` is its denoiser ``(x_t [B, L], t) -> logits [B, L, vocab_size]``."""

    config_class, network = GddsTwoStreamConfig, "TwoStream"

    def __init__(self, config):
        super().__init__(config)
        add_trunk(self, self.a, self.vocab_size, QueryBlock)
        self.query = nn.Parameter(torch.zeros(self.a["width"]))
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, tokens, positions, start, end, q_pos, q_time, **kwargs):
        """Pieces ``tokens, positions, start, end [B, P]`` (token ``tokens`` held at ``positions`` on
        ``[start, end)``); queries ``q_pos, q_time [B, Q]``; logits ``[B, Q, vocab_size]`` of each query's token.
        Every query must see one piece per position."""
        self.check_length(int(max(positions.max(), q_pos.max())) + 1)
        B, Q = q_pos.shape
        allowed = (start[:, None, :] <= q_time[..., None]) & (q_time[..., None] < end[:, None, :])
        c = F.silu(self.time_embed(q_time.reshape(-1))).view(B, Q, -1)
        h = self.embed(tokens)
        g = self.query.to(h.dtype).expand(B, Q, -1)
        head_dim, base = self.a["width"] // self.a["heads"], float(self.a["rope_base"])
        q_rot, k_rot = rotary(q_pos, head_dim, base), rotary(positions, head_dim, base)
        for block in self.blocks:
            g = block(g, h, c, q_rot, k_rot, allowed)
        return output(self, g, c, self.vocab_size)

    def snapshot(self, input_ids, t):
        """Logits ``[B, L, vocab_size]`` at every position of ``x_t = input_ids`` at times ``t`` (number or ``[B]``)."""
        B, L = input_ids.shape
        t = times(t, B, input_ids.device).double()
        pos = torch.arange(L, device=input_ids.device).expand(B, L)
        start = torch.zeros(B, L, dtype=torch.float64, device=input_ids.device)
        return self(input_ids, pos, start, start + 2.0, pos, t[:, None].expand(B, L))
