"""The task-solver: backbone + AiT decoder + task heads with frozen tokenizers (DESIGN §4 "Task-solver").

`build_task_solver(cfg)` assembles it from a `Config`; `TaskSolver.training_step(batch)` (also its
`forward`, so DistributedDataParallel sees the call) returns the loss to backpropagate and float parts;
`predict_depth` / `predict_instances` run inference.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import nn

from ait.config.schema import Config, ModelConfig, TokenizerRef
from ait.engine.preflight import BACKBONE_FROM_SCRATCH, UNTRAINED_TOKENIZER
from ait.losses import token_normaliser
from ait.model.attention_guide import (
    attention_guide_loss,
    captured_cross_attention,
    object_cells,
    position_targets,
)
from ait.model.depth_head import DepthHead
from ait.model.instance_head import InstanceHead
from ait.model.memory_boxes import MemoryBoxHead, instance_masks
from ait_backbone import create_backbone, load_backbone_checkpoint
from ait_decoder import AiTDecoder, DecoderConfig, VocabLayout, sine_coordinate_codes
from ait_tokenizer import TokenizerConfig, VQVAETokenizer, create_tokenizer, load_tokenizer

TASKS = ("depth", "insseg", "det")
DECODING_MODES = ("autoregressive", "parallel")  # model.decoding values (AiT / AiT-P)
# float parts a training step reports per task (the same keys on every rank, 0 where a task is absent)
_PART_KEYS = {
    "depth": ("depth_ce", "depth_silog", "depth_loss", "depth_tokens"),
    "insseg": ("insseg_ce", "insseg_mask_aux", "insseg_objects", "insseg_loss", "insseg_tokens"),
    "det": ("det_ce", "det_loss", "det_tokens"),
}


# where `token_counts` leaves an instance batch's sequences for the forward pass that follows
_TARGETS_KEY = "_sequence_targets"


class TaskSolver(nn.Module):
    """One backbone and decoder shared by the configured tasks; tokenizers frozen (no grad, eval mode)."""

    def __init__(
        self,
        cfg: Config,
        backbone: nn.Module,
        decoder: AiTDecoder,
        vocab: VocabLayout,
        depth_head: DepthHead | None = None,
        instance_head: InstanceHead | None = None,
        memory_box_head: MemoryBoxHead | None = None,
    ) -> None:
        super().__init__()
        self.memory_box_head = memory_box_head  # training only: a dense loss on the image memory
        self.cfg = cfg
        self.backbone = backbone
        self.decoder = decoder
        self.vocab = vocab
        self.depth_head = depth_head
        self.instance_head = instance_head
        self.tasks = tuple(cfg.model.tasks)
        for head in (depth_head, instance_head):
            tokenizer = getattr(head, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.requires_grad_(False)
                tokenizer.eval()
                # model.soft_lookup: the Triton kernel or the torch path (AIT_SOFT_LOOKUP overrides "auto")
                tokenizer.soft_lookup_backend = cfg.model.soft_lookup

    # --------------------------------------------------------------------------------------- structure
    def train(self, mode: bool = True) -> TaskSolver:
        """Train/eval the solver; the frozen tokenizers stay in eval mode (no EMA updates, no augmentation)."""
        super().train(mode)
        for tokenizer in self.tokenizers():
            tokenizer.eval()
        return self

    def tokenizers(self) -> list[nn.Module]:
        heads = (self.depth_head, self.instance_head)
        return [h.tokenizer for h in heads if h is not None and getattr(h, "tokenizer", None) is not None]

    def tokenizer_configs(self) -> dict[str, dict]:
        """{kind: architecture} of the frozen tokenizers, saved with the solver's checkpoints.

        A tokenizer trained with overrides of its preset (the demo's 16x16-token depth tokenizer) cannot be
        rebuilt from the preset name alone; with these a checkpoint rebuilds its solver without the files.
        """
        return {tokenizer.kind: tokenizer.config.to_dict() for tokenizer in self.tokenizers()}

    def trainable_named_parameters(self):
        """(name, parameter) pairs that the optimiser should update (the tokenizers are excluded)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def unused_parameter_names(self) -> list[str]:
        """Trainable parameters this config never uses: AiT-P's mask embedding when every task decodes
        autoregressively (kept so a checkpoint has one layout). DDP is told to skip them, so it needs no
        unused-parameter search for them."""
        if any(self.is_parallel(task) for task in self.cfg.model.tasks):
            return []
        return ["decoder.mask_embed"]

    def encode_images(self, images: torch.Tensor):
        """(B, 3, H, W) -> the decoder's memory (neck output) for that batch.

        Under fp16 autocast only the backbone runs in half precision: as in the original, the transformer
        (neck + decoder) stays in fp32, where its attention logits cannot overflow.
        """
        features = self.backbone(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.decoder.encode(features.float())

    def teacher_forced_logits(self, memory, input_ids: torch.Tensor | None, task: str, length: int):
        """(B, T, V) training logits: teacher forcing (AiT) or the one masked pass (AiT-P, the task's
        `model.decoding_mode`), in fp32."""
        with torch.autocast(memory.tokens.device.type, enabled=False):
            if self.is_parallel(task):
                return self.decoder(memory, None, task, parallel=True, length=length)
            return self.decoder(memory, input_ids, task)

    def is_parallel(self, task: str) -> bool:
        """Whether `task` trains and decodes as AiT-P (one masked pass): `cfg.model.decoding_mode(task)`."""
        return self.cfg.model.decoding_mode(task) == "parallel"

    # ----------------------------------------------------------------------------------------- training
    def forward(
        self, batch: dict, generator: torch.Generator | None = None, normalisers: torch.Tensor | None = None
    ) -> dict:
        return self.training_step(batch, generator, normalisers)

    def token_counts(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Supervised-token count of each configured task in `batch` (config task order, 0 when absent).

        What `training_step` divides by, known before any forward pass: the engine sums it over the
        micro-batches of a global batch (gradient accumulation) so that every micro-batch is normalised by
        the count of the whole global batch. Instance sequences are built here (their padding decides the
        count) and kept in `batch[task]` for the forward pass that follows, so they are built once.
        """
        counts = []
        for task in self.tasks:
            if task not in batch:
                counts.append(0.0)
            elif task == "depth":
                counts.append(float(batch[task]["image"].shape[0] * self.depth_head.length))
            else:
                targets = self.instance_head.build_targets(batch[task], generator)
                batch[task][_TARGETS_KEY] = targets
                counts.append(float((targets["weights"] > 0).sum()))
        return torch.tensor(counts, device=self.decoder.output_bias.device)

    def training_step(
        self, batch: dict, generator: torch.Generator | None = None, normalisers: torch.Tensor | None = None
    ) -> dict:
        """batch: {task: collated batch}; returns {"loss": tensor} plus float parts per task.

        Each task's loss = its summed local loss (weighted CE sum [+ weighted mask aux sum] [+ depth:
        aux_weight x SILog x local token count]) / its supervised-token count averaged over ranks (at least
        1); tasks are weighted and summed (DESIGN §4 "Joint training"). The token counts of *every*
        configured task go through one all-reduce on every rank, whatever the local batch holds: a rank
        without depth images (4 NYU images over many GPUs) passes 0 for depth, so all ranks join the same
        collectives in the same order. A batch may hold any subset of the tasks, even none. The float
        parts have the same keys on every rank (0 for a task absent here), as the engine averages them.
        Random choices of the instance sequences (padding, jitter, class corruption) use `generator`, else
        the per-sample seeds the training data carries ("sequence_seed"), else the global torch RNG.
        `normalisers` (one per configured task, e.g. `token_normaliser` of `token_counts` summed over the
        micro-batches of a global batch) replaces the all-reduced counts of this batch; no collective then.
        """
        unknown = set(batch) - set(self.tasks)
        if unknown:
            raise ValueError(f"batch tasks must be a subset of {self.tasks}, received {sorted(batch)}")
        local: dict[str, dict] = {}  # task -> {"sum", "count", ...} of this rank's batch
        for task in self.tasks:
            if task in batch:
                if task == "depth":
                    local[task] = self._depth_sum(batch[task])
                else:
                    local[task] = self._instance_sum(task, batch[task], generator)

        # One collective for all tasks, in the config's task order, on every rank.
        anchor = self.decoder.output_bias
        zero = torch.zeros((), device=anchor.device)
        if normalisers is None:
            counts = torch.stack([local[t]["count"].float() if t in local else zero for t in self.tasks])
            normalisers = token_normaliser(counts)

        loss_cfg = self.cfg.loss
        # a rank with nothing to learn from still returns a loss with a graph (zero gradients)
        total = anchor.sum() * 0.0
        parts: dict[str, float] = {}
        for index, task in enumerate(self.tasks):
            weight = loss_cfg.depth_task_weight if task == "depth" else loss_cfg.insseg_task_weight
            if task not in local:
                parts.update(dict.fromkeys(self._part_keys(task), 0.0))
                continue
            terms, norm = local[task], normalisers[index]
            task_loss = terms["sum"] / norm
            total = total + weight * task_loss
            parts[f"{task}_ce"] = float(terms["ce_sum"].detach() / norm)
            if task == "depth":
                parts["depth_silog"] = float(terms["silog"].detach())
            elif task == "insseg":
                parts["insseg_mask_aux"] = float(terms["aux_sum"].detach() / norm)
                parts["insseg_objects"] = float(terms["objects"])
            if "memory_box_sum" in terms:
                parts[f"{task}_memory_boxes"] = float(terms["memory_box_sum"].detach() / norm)
            if "attention_guide_sum" in terms:
                parts[f"{task}_attention_guide"] = float(terms["attention_guide_sum"].detach() / norm)
            parts[f"{task}_loss"] = float(task_loss.detach())
            parts[f"{task}_tokens"] = float(terms["count"])
        parts_out = {"loss": total, **parts}
        parts_out["total"] = float(total.detach())
        return parts_out

    def _part_keys(self, task: str) -> tuple[str, ...]:
        keys = _PART_KEYS[task]
        if task != "depth" and self.memory_box_head is not None:
            keys = (*keys, f"{task}_memory_boxes")
        if task != "depth" and self.cfg.loss.attention_guide_weight > 0:
            keys = (*keys, f"{task}_attention_guide")
        return keys

    def _depth_sum(self, depth_batch: dict) -> dict[str, torch.Tensor]:
        head = self.depth_head
        images, depth = head.pad(depth_batch["image"], depth_batch["depth"])
        target_ids = head.targets(depth)
        memory = self.encode_images(images)
        logits = self.teacher_forced_logits(memory, target_ids, "depth", head.length)
        return head.loss(logits, target_ids, depth)

    def _instance_sum(self, task: str, inst_batch: dict, generator) -> dict[str, torch.Tensor]:
        head = self.instance_head
        if head is None or head.task != task:
            raise ValueError(f"this solver has no {task!r} head (tasks {self.tasks})")
        targets = inst_batch.get(_TARGETS_KEY)  # built by `token_counts` for this very batch
        if targets is None or generator is not None:
            targets = head.build_targets(inst_batch, generator)
        memory = self.encode_images(inst_batch["image"])
        guide_weight = self.cfg.loss.attention_guide_weight
        with captured_cross_attention(self.decoder) if guide_weight > 0 else nullcontext() as records:
            logits = self.teacher_forced_logits(memory, targets["input_ids"], task, head.length)
        terms = head.loss(logits, targets)
        total = terms["ce_sum"] + terms["aux_sum"]
        if guide_weight > 0:
            cells = [
                object_cells(
                    instance_masks(inst_batch, index, head.canvas), memory.grid, self.backbone.stride
                )
                for index in range(len(inst_batch["boxes"]))
            ]
            guide_targets = position_targets(targets["slot_objects"], cells, head.per_object, head.length)
            guide_sum, _ = attention_guide_loss(records, guide_targets.to(logits.device))
            terms["attention_guide_sum"] = guide_weight * guide_sum
            total = total + terms["attention_guide_sum"]
        if self.memory_box_head is not None:
            memory_sum, _ = self.memory_box_head.loss(
                memory.tokens,
                memory.grid,
                self.backbone.stride,
                inst_batch,
                self.decoder,
                self.vocab,
                head.canvas,
            )
            terms["memory_box_sum"] = self.cfg.loss.memory_box_weight * memory_sum
            total = total + terms["memory_box_sum"]
        return {**terms, "sum": total, "objects": len(targets["real_index"])}

    # ---------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_depth(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) with H, W <= depth_size -> depth (B, 1, H, W) in metres (call `.eval()` first).

        AiT: greedy autoregressive decoding (soft next-token input when soft_input); AiT-P: one masked pass.
        The output is the soft mixture decoded with tau (w/o soft token: the argmax codes decoded).
        """
        head = self._require_head("depth")
        height, width = images.shape[-2:]
        padded, _ = head.pad(images)
        memory = self.encode_images(padded)
        model = self.cfg.model
        parallel = self.is_parallel("depth")
        soft_input = model.soft_input and model.soft_token and not parallel
        out = self.decoder.generate(
            memory,
            "depth",
            head.length,
            allowed=self.vocab.allowed_ranges("depth", head.length).to(images.device),
            strategy="greedy",
            soft_positions=torch.ones(head.length, dtype=torch.bool, device=images.device)
            if soft_input
            else None,
            parallel=parallel,
            weights="fp32" if parallel else model.decode_weights,
            logit_span=self.vocab.depth_codes,  # the head reads depth-code logits only
        )
        return head.decode(out.ids, out.logits)[..., :height, :width]

    @torch.no_grad()
    def predict_instances(
        self,
        images: torch.Tensor,
        scale=1.0,
        orig_size=None,
        generator: torch.Generator | None = None,
    ) -> list[dict]:
        """(B, 3, canvas, canvas) -> per image {"boxes" (N,4) xyxy original pixels, "labels", "scores",
        "masks" bool (N, H, W) (insseg only)}; always max_objects objects, nucleus sampling with top_p.

        scale: the resize factor from the original image to the canvas (one or per image); orig_size: the
        original (H, W) (one or per image; default canvas / scale).
        """
        task = "insseg" if "insseg" in self.tasks else "det"
        head = self._require_head(task)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), received {tuple(images.shape)}")
        memory = self.encode_images(images)
        model = self.cfg.model
        parallel = self.is_parallel(task)
        soft_input = task == "insseg" and model.soft_input and model.soft_token and not parallel
        out = self.decoder.generate(
            memory,
            task,
            head.length,
            allowed=self.vocab.allowed_ranges(task, head.length).to(images.device),
            strategy="top_p",
            top_p=model.top_p,
            soft_positions=head.soft_positions().to(images.device) if soft_input else None,
            generator=generator,
            parallel=parallel,
            weights="fp32" if parallel else model.decode_weights,
        )
        return head.parse(out.ids, out.logits, scale=scale, orig_size=orig_size)

    def _require_head(self, task: str):
        head = self.depth_head if task == "depth" else self.instance_head
        if head is None or (task != "depth" and head.task != task):
            raise ValueError(f"this solver was built without the {task!r} task (tasks {self.tasks})")
        return head


# ------------------------------------------------------------------------------------------------ build
def build_vocab(model: ModelConfig, depth_codes: int = 128, mask_codes: int = 128, tokens_per_mask: int = 16):
    """The layout the config asks for; the paper configs (2000 bins, 80 classes, 128-code tokenizers, 128
    reserved ids with instance tasks) give exactly `VocabLayout.paper()`: 2467 ids, or 2339 without reserved."""
    return VocabLayout(
        num_bins=model.num_bins,
        num_classes=model.num_classes,
        mask_codes=mask_codes,
        depth_codes=depth_codes,
        reserved=model.reserved_tokens,
        tokens_per_mask=tokens_per_mask,
    )


def load_frozen_tokenizer(ref: TokenizerRef | None, kind: str, architecture: dict | None = None) -> nn.Module:
    """Load a trained tokenizer checkpoint (its preset checked), or an untrained preset with a warning.

    `architecture` (a `TokenizerConfig` dict, from a solver checkpoint's `tokenizer_configs`): build that
    tokenizer untrained, without a warning; the solver checkpoint's weights fill it.
    """
    if ref is None:
        raise ValueError(f"the config's tasks need a {kind} tokenizer: set model.{kind}_tokenizer")
    if architecture is not None:
        tokenizer = VQVAETokenizer(TokenizerConfig.from_dict(architecture))
    elif ref.checkpoint == UNTRAINED_TOKENIZER:  # asked for explicitly (tests): no warning
        tokenizer = create_tokenizer(ref.preset)
    elif ref.checkpoint is None:
        warnings.warn(
            f"model.{kind}_tokenizer has no checkpoint: using an UNTRAINED {ref.preset!r} tokenizer "
            "(fine for tests, meaningless for training)",
            stacklevel=3,
        )
        tokenizer = create_tokenizer(ref.preset)
    else:
        tokenizer = load_tokenizer(ref.checkpoint, expected_preset=ref.preset)
    if tokenizer.kind != kind:
        raise ValueError(
            f"model.{kind}_tokenizer must be a {kind} tokenizer, received kind {tokenizer.kind!r}"
        )
    return tokenizer.requires_grad_(False).eval()


def build_task_solver(cfg: Config, tokenizer_configs: dict[str, dict] | None = None) -> TaskSolver:
    """Backbone (+ optional checkpoint) + AiT decoder + heads for cfg.model.tasks, with frozen tokenizers.

    `tokenizer_configs` ({"depth"|"mask": TokenizerConfig dict}, what `TaskSolver.tokenizer_configs` saved):
    build those tokenizers' architectures untrained instead of reading model.*_tokenizer (a solver checkpoint
    about to load its own weights).
    """
    stored = tokenizer_configs or {}
    model = cfg.model
    tasks = tuple(model.tasks)
    if not tasks or set(tasks) - set(TASKS) or ("insseg" in tasks and "det" in tasks):
        raise ValueError(
            f"model.tasks must be a non-empty subset of {TASKS} without both 'insseg' and 'det', received {tasks}"
        )
    for task, mode in model.decoding.items():
        if task not in tasks or mode not in DECODING_MODES:
            raise ValueError(
                f"model.decoding must map tasks of model.tasks {tasks} to one of {DECODING_MODES}, "
                f"received {task!r}: {mode!r}"
            )
    depth_tok = (
        load_frozen_tokenizer(model.depth_tokenizer, "depth", stored.get("depth"))
        if "depth" in tasks
        else None
    )
    mask_tok = (
        load_frozen_tokenizer(model.mask_tokenizer, "mask", stored.get("mask")) if "insseg" in tasks else None
    )
    tokens_per_mask = 16
    if mask_tok is not None:
        grid = mask_tok.token_grid(*mask_tok.config.input_size)
        tokens_per_mask = grid[0] * grid[1]
    vocab = build_vocab(
        model,
        depth_codes=depth_tok.num_codes if depth_tok is not None else 128,
        mask_codes=mask_tok.num_codes if mask_tok is not None else 128,
        tokens_per_mask=tokens_per_mask,
    )

    backbone = create_backbone(
        model.backbone, drop_path_rate=model.backbone_drop_path, **model.backbone_overrides
    )
    backbone.set_grad_checkpointing(model.backbone_grad_checkpointing)
    if model.backbone_checkpoint and model.backbone_checkpoint != BACKBONE_FROM_SCRATCH:
        report = load_backbone_checkpoint(backbone, model.backbone_checkpoint)
        if getattr(report, "missing", None):
            warnings.warn(f"backbone checkpoint is missing {len(report.missing)} tensors", stacklevel=2)

    depth_head = None
    if depth_tok is not None:
        depth_head = DepthHead(
            depth_tok,
            vocab,
            size=model.depth_size,
            image_size=model.depth_image_size,
            tau=model.tau_depth,
            soft_token=model.soft_token,
            aux_weight=cfg.loss.depth_aux_weight,
            silog_lambda=cfg.loss.silog_lambda,
        )
    instance_head = None
    instance_task = next((t for t in tasks if t in ("insseg", "det")), None)
    if instance_task is not None:
        instance_head = InstanceHead(
            instance_task,
            vocab,
            mask_tok,
            max_objects=model.max_objects,
            canvas=model.canvas,
            tau=model.tau_mask,
            soft_token=model.soft_token,
            box_weight=cfg.loss.box_weight,
            class_weight=cfg.loss.class_weight,
            mask_weight=cfg.loss.mask_weight,
            mask_aux_weight=cfg.loss.mask_aux_weight,
            object_order=model.object_order,
            coord_sigma=cfg.loss.coord_sigma,
            duplicate_boxes=model.duplicate_boxes,
        )

    lengths = {}
    if depth_head is not None:
        lengths["depth"] = depth_head.length
    if instance_head is not None:
        lengths[instance_task] = instance_head.length
    decoder = AiTDecoder(
        DecoderConfig(
            in_channels=backbone.out_channels,
            vocab_size=vocab.size,
            tasks=lengths,
            d_model=model.d_model,
            nhead=model.nhead,
            num_encoder_layers=model.num_encoder_layers,
            num_decoder_layers=model.num_decoder_layers,
            dim_feedforward=model.dim_feedforward,
            dropout=model.dropout,
            drop_path=model.drop_path,
        )
    )
    if model.coordinate_embedding == "sine" and instance_head is not None:
        first = vocab.coord[0]
        codes = sine_coordinate_codes(vocab.num_bins, model.canvas, backbone.stride, model.d_model)
        decoder.init_coordinate_embeddings(first, codes)
    memory_box_head = None
    if cfg.loss.memory_box_weight > 0 and instance_head is not None:
        memory_box_head = MemoryBoxHead(
            model.d_model,
            rank_slots=model.max_objects if cfg.loss.memory_rank_weight > 0 else 0,
            # the memory-box sum is scaled by memory_box_weight as a whole
            rank_weight=cfg.loss.memory_rank_weight / cfg.loss.memory_box_weight,
            order=model.object_order,
        )
    return TaskSolver(
        cfg,
        backbone,
        decoder,
        vocab,
        depth_head=depth_head,
        instance_head=instance_head,
        memory_box_head=memory_box_head,
    )
