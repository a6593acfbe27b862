"""The AiT task-solver head: neck + token decoder (DESIGN §4), with cached one-step decoding.

Reading order: ``DecoderConfig`` → ``AiTDecoder.__init__`` (parameters) → ``encode`` (neck) →
``forward`` (teacher forcing / AiT-P, one pass) → ``start_decoding`` + ``decode_step`` (the cached
step the autoregressive loop in ``generation.py`` calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ait_decoder.generation import GenerationOutput, generate
from ait_decoder.layers import DecoderBlock, PackedDecoderBlock, StepLinear
from ait_decoder.neck import Memory, Neck


@dataclass
class DecoderConfig:
    """Sizes of the neck and decoder. Defaults are the paper's (width 256, 6+6 layers, 8 heads, FFN 1024)."""

    in_channels: int
    vocab_size: int
    tasks: dict[str, int] = field(default_factory=lambda: {"depth": 225})  # task -> max sequence length
    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    drop_path: float = 0.1
    attn_dropout: float = 0.0  # the original's attention has no dropout
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.nhead:
            raise ValueError(f"d_model {self.d_model} must be divisible by nhead {self.nhead}")
        if self.d_model % 4:
            raise ValueError(f"d_model {self.d_model} must be divisible by 4 (2-D sine positions)")
        if not self.tasks:
            raise ValueError("DecoderConfig.tasks must name at least one task with its sequence length")
        for task, length in self.tasks.items():
            if length < 1:
                raise ValueError(f"task {task!r} needs a sequence length >= 1, received {length}")
        if self.in_channels < 1 or self.vocab_size < 1:
            raise ValueError(
                f"in_channels and vocab_size must be >= 1, received {self.in_channels}, {self.vocab_size}"
            )


@dataclass
class DecodingState:
    """Everything one autoregressive decode reuses across steps: per block, the image memory's
    keys/values (computed once per image) and a preallocated self-attention cache ``(B, H, T, d)``
    written in place (``PackedDecoderBlock``); the task's position table; the tied output weight."""

    task: str
    length: int
    blocks: list[PackedDecoderBlock]
    positions: torch.Tensor  # (T, D) the task's learned position table, first T rows
    output: StepLinear  # the tied token embedding + output bias (rows vocab_span), laid out for the step
    vocab_span: tuple[int, int]  # [lo, hi): the ids whose logits a step computes

    @property
    def batch_size(self) -> int:
        return self.blocks[0].k_cache.shape[0]


class AiTDecoder(nn.Module):
    """Neck + decoder. Decoder input at position t: ``[prompt, token_{0..T-2}]_t + position_t``; output
    logits tie to the input embedding (+ a bias) over the whole vocabulary."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        self.neck = Neck(
            config.in_channels,
            dim,
            config.nhead,
            config.num_encoder_layers,
            config.dim_feedforward,
            config.dropout,
            config.drop_path,
            config.attn_dropout,
        )
        self.token_embed = nn.Embedding(config.vocab_size, dim)
        self.task_prompts = nn.ParameterDict(
            {task: nn.Parameter(torch.empty(1, dim)) for task in config.tasks}
        )
        self.task_positions = nn.ParameterDict(
            {task: nn.Parameter(torch.empty(length, dim)) for task, length in config.tasks.items()}
        )
        self.mask_embed = nn.Parameter(torch.empty(dim))  # AiT-P's single input embedding
        self.blocks = nn.ModuleList(
            DecoderBlock(
                dim,
                config.nhead,
                config.dim_feedforward,
                config.dropout,
                config.drop_path,
                config.attn_dropout,
            )
            for _ in range(config.num_decoder_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.output_bias = nn.Parameter(torch.empty(config.vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's trunc_normal_(std=0.02) for linears, embeddings, prompts, positions and the output bias
        (as the original); zero linear biases; unit LayerNorms.

        The bounds stay the default a=-2, b=2 in absolute units, as the original calls it: at std 0.02 they
        sit at +-100 sigma, so the draw is an untruncated N(0, 0.02^2) in effect."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for tensor in (
            self.token_embed.weight,
            self.mask_embed,
            self.output_bias,
            *self.task_prompts.values(),
            *self.task_positions.values(),
        ):
            nn.init.trunc_normal_(tensor, std=std)

    def init_coordinate_embeddings(self, first_id: int, codes: torch.Tensor) -> None:
        """Start the embeddings of ids ``first_id .. first_id + len(codes) - 1`` (the coordinate bins; input and
        output, as they are tied) from ``codes`` (e.g. ``sine_coordinate_codes``), scaled so that their entries'
        RMS is ``init_std`` like the random rows': neighbouring bins then start with similar embeddings, and a
        bin's embedding resembles the memory cells' position codes at its place."""
        rows = self.token_embed.weight
        if (
            codes.ndim != 2
            or codes.shape[1] != rows.shape[1]
            or not 0 <= first_id <= rows.shape[0] - len(codes)
        ):
            raise ValueError(
                f"codes must be (n, {rows.shape[1]}) rows of ids within the vocabulary of {rows.shape[0]}, "
                f"received {tuple(codes.shape)} from id {first_id}"
            )
        rms = codes.to(torch.float64).pow(2).mean().sqrt().clamp_min(1e-12)
        with torch.no_grad():
            rows[first_id : first_id + len(codes)] = (codes / rms * self.config.init_std).to(rows.dtype)

    # --- neck ----------------------------------------------------------------------------------------
    def encode(self, features: torch.Tensor) -> Memory:
        """Backbone features (B, C, h, w) -> ``Memory`` (tokens (B, h*w, D) with positions added)."""
        return self.neck(features)

    # --- shared pieces ---------------------------------------------------------------------------------
    def _check_task(self, task: str, length: int) -> None:
        if task not in self.config.tasks:
            raise ValueError(f"unknown task {task!r}; this decoder knows {sorted(self.config.tasks)}")
        if not 1 <= length <= self.config.tasks[task]:
            raise ValueError(
                f"task {task!r} holds sequences of length 1..{self.config.tasks[task]}, received {length}"
            )

    def _memory_tokens(self, memory: Memory, batch: int) -> torch.Tensor:
        tokens = memory.tokens
        if tokens.shape[0] == batch:
            return tokens
        if tokens.shape[0] == 1:  # one image shared by several sequences
            return tokens.expand(batch, -1, -1)
        raise ValueError(f"memory holds {tokens.shape[0]} images but the sequences a batch of {batch}")

    def check_vocab_span(self, vocab_span: tuple[int, int] | None) -> tuple[int, int]:
        """``(lo, hi)`` of a span of ids (all V when None), validated."""
        vocab = self.config.vocab_size
        if vocab_span is None:
            return 0, vocab
        lo, hi = (int(v) for v in vocab_span)
        if not 0 <= lo < hi <= vocab:
            raise ValueError(f"vocab span must satisfy 0 <= lo < hi <= {vocab}, received {tuple(vocab_span)}")
        return lo, hi

    def logits(self, hidden: torch.Tensor, vocab_span: tuple[int, int] | None = None) -> torch.Tensor:
        """Final LayerNorm, then the tied output layer: (…, D) -> (…, V), or (…, hi - lo) for the ids of
        ``vocab_span = (lo, hi)`` only."""
        lo, hi = self.check_vocab_span(vocab_span)
        return F.linear(self.final_norm(hidden), self.token_embed.weight[lo:hi], self.output_bias[lo:hi])

    def decode_embeddings(
        self,
        inputs: torch.Tensor,
        memory: Memory,
        task: str,
        vocab_span: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Run the decoder over given input embeddings (B, T, D) (positions not yet added) -> logits (B, T, V)
        (or over the ids of ``vocab_span`` only, see ``logits``).

        Causal self-attention; cross-attention keys/values of the memory are projected here, per call.
        """
        batch, length, _ = inputs.shape
        self._check_task(task, length)
        memory_tokens = self._memory_tokens(memory, batch)
        x = inputs + self.task_positions[task][:length]
        for block in self.blocks:
            x = block(x, *block.memory_kv(memory_tokens))
        return self.logits(x, vocab_span)

    def prompt(self, task: str, batch: int) -> torch.Tensor:
        """The learned task prompt as a first input: (B, 1, D)."""
        return self.task_prompts[task].expand(batch, 1, -1)

    # --- one pass: teacher forcing / AiT-P ---------------------------------------------------------
    def forward(
        self,
        memory: Memory,
        input_ids: torch.Tensor | None,
        task: str,
        parallel: bool = False,
        length: int | None = None,
        vocab_span: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) aligned with the targets (over the ids of ``vocab_span`` only, see ``logits``).

        Teacher forcing: decoder input = ``[prompt, embed(input_ids[:, :-1])]``, so ``logits[:, t]``
        predicts ``input_ids``' target at ``t``. AiT-P (``parallel=True``): input =
        ``[prompt, mask_embed, ..., mask_embed]`` of ``length`` (or ``input_ids.shape[1]``) positions,
        under the same causal mask; no input depends on an output, so one pass is the whole decode.
        """
        if parallel:
            if length is None:
                if input_ids is None:
                    raise ValueError("parallel decoding needs length= (or input_ids to take the length from)")
                length = input_ids.shape[1]
            batch = memory.batch_size
            self._check_task(task, length)
            masks = self.mask_embed.expand(batch, length - 1, -1)
            inputs = torch.cat((self.prompt(task, batch), masks), dim=1)
            return self.decode_embeddings(inputs, memory, task, vocab_span)
        if input_ids is None:
            raise ValueError("teacher forcing needs input_ids (B, T); pass parallel=True for AiT-P")
        if input_ids.ndim != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must be (B, T) with T >= 1, received shape {tuple(input_ids.shape)}")
        self.check_ids(input_ids)
        batch, length = input_ids.shape
        self._check_task(task, length)
        inputs = torch.cat((self.prompt(task, batch), self.token_embed(input_ids[:, :-1])), dim=1)
        return self.decode_embeddings(inputs, memory, task, vocab_span)

    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"token ids must be an integer tensor, received dtype {ids.dtype}")
        vocab = self.config.vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"token ids must lie in [0, {vocab}) (vocab_size), received values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )

    # --- cached autoregressive decoding ------------------------------------------------------------
    def start_decoding(
        self,
        memory: Memory,
        task: str,
        length: int,
        batch: int | None = None,
        weights: str = "fp32",
        vocab_span: tuple[int, int] | None = None,
    ) -> DecodingState:
        """Project the memory's keys/values for every block once and allocate the self-attention caches.

        ``weights``: ``"fp32"`` (exact) or ``"int8"`` (weight-only int8 GEMVs on the CPU, see ``StepLinear``).
        ``vocab_span (lo, hi)``: steps compute the logits of ids ``lo..hi-1`` only (default: all V).
        """
        lo, hi = self.check_vocab_span(vocab_span)
        batch = memory.batch_size if batch is None else batch
        self._check_task(task, length)
        memory_tokens = self._memory_tokens(memory, batch)
        heads = self.config.nhead
        cache_shape = (batch, heads, length, self.config.d_model // heads)
        blocks = [
            block.pack_for_decoding(
                *block.memory_kv(memory_tokens),
                memory_tokens.new_zeros(cache_shape),
                memory_tokens.new_zeros(cache_shape),
                weights=weights,
            )
            for block in self.blocks
        ]
        positions = self.task_positions[task][:length]
        output = StepLinear.from_weight(self.token_embed.weight[lo:hi], self.output_bias[lo:hi], weights)
        return DecodingState(task, length, blocks, positions, output, (lo, hi))

    def decode_step(self, state: DecodingState, inputs: torch.Tensor, t: int) -> torch.Tensor:
        """Decoder input embedding of position ``t`` (B, D) -> logits (B, hi - lo) of the ids in
        ``state.vocab_span`` (all V by default); caches position ``t``.

        Eval semantics (no dropout / drop-path): this is the inference path.
        """
        x = inputs + state.positions[t]
        for block in state.blocks:
            x = block.step(x, t)
        norm = self.final_norm
        return state.output(F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps))

    def generate(
        self,
        memory: Memory,
        task: str,
        length: int,
        allowed: torch.Tensor | None = None,
        strategy: str = "greedy",
        top_p: float = 0.3,
        soft_positions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        parallel: bool = False,
        weights: str = "fp32",
        logit_span: tuple[int, int] | None = None,
    ) -> GenerationOutput:
        """Decode ``length`` tokens of ``task``: ``out.ids (B, T)``, ``out.logits (B, T, V)`` (raw logits).

        See ``ait_decoder.generation.generate`` for the options.
        """
        return generate(
            self,
            memory,
            task,
            length,
            allowed=allowed,
            strategy=strategy,
            top_p=top_p,
            soft_positions=soft_positions,
            generator=generator,
            use_cache=use_cache,
            parallel=parallel,
            weights=weights,
            logit_span=logit_span,
        )
