"""Typed configuration of a task-solver run.

Plain dataclasses: the registry (`ait.config.registry`) holds one `Config` per original config name,
`--cfg-options a.b=c` overrides fields by dotted path (`ait.config.overrides`), and the effective config is
stored as JSON with every checkpoint.

Ownership while the app is being built: ModelConfig, LossConfig and EvalConfig belong to the model/losses
work (ait.model, ait.losses, ait.evaluation); DataConfig, OptimConfig and Config to the engine work.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerRef:
    """A frozen tokenizer the solver uses: a preset name and (normally) a trained checkpoint."""

    preset: str = "depth-paper"
    checkpoint: str | None = None


@dataclass
class ModelConfig:
    # backbone (ait_backbone.create_backbone)
    backbone: str = "swinv2-b-480"
    backbone_overrides: dict = field(default_factory=dict)
    backbone_checkpoint: str | None = None
    backbone_drop_path: float = 0.1
    # recompute each backbone block in the backward pass (timm's activation checkpointing): the saved
    # activations of the backbone shrink to its block inputs, for about a third more backbone compute
    backbone_grad_checkpointing: bool = False
    # neck + decoder (ait_decoder.DecoderConfig)
    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    drop_path: float = 0.1
    # vocabulary (ait_decoder.VocabLayout)
    num_bins: int = 2000
    num_classes: int = 80
    reserved_tokens: int = 0
    # tasks and decoding
    tasks: tuple[str, ...] = ("depth",)  # subset of "depth", "insseg", "det"
    parallel: bool = False  # AiT-P: one masked forward pass instead of autoregressive decoding
    # per-task decoding, overriding `parallel` for the tasks it names: {"depth": "parallel", "insseg":
    # "autoregressive"} trains and decodes depth as AiT-P and instances as AiT in one joint solver.
    # Modes: "parallel" | "autoregressive"; keys: tasks of model.tasks. See `decoding_mode`.
    decoding: dict[str, str] = field(default_factory=dict)
    soft_token: bool = True  # soft-token auxiliary loss + soft decoding; False = the w/o-soft ablation
    soft_input: bool = True  # soft next-token input at inference (AiT, not AiT-P)
    tau_depth: float = 0.8
    tau_mask: float = 1.0
    top_p: float = 0.3
    # weights of the cached autoregressive steps: "fp32" (exact) or "int8" (weight-only int8 GEMVs on the
    # CPU, about 2x faster decoding at batch 1, not bit-exact; ait_decoder.layers.StepLinear)
    decode_weights: str = "fp32"
    # soft lookup softmax(tau * logits) @ codebook: "auto" (the fused Triton kernel on CUDA when triton is
    # installed, torch elsewhere), "triton" or "torch". The environment variable AIT_SOFT_LOOKUP=torch
    # overrides "auto" without a config change (a Triton failure on a user's GPU)
    soft_lookup: str = "auto"
    max_objects: int = 100
    # order of the objects in an instance sequence: "random" (the original), "area" (largest first), "raster"
    object_order: str = "random"
    # padding slots of an instance sequence that are jittered duplicates of real objects (target: the noise
    # class): "uniform" (the original: their number uniform in [0, free slots], the rest bad boxes) or "none"
    # (every free slot a bad box, away from the objects)
    duplicate_boxes: str = "uniform"
    # how the coordinate bins' embeddings start: "learned" (random, as every other token: the original) or
    # "sine" (each bin's position on the memory grid in the neck's sine code, so neighbouring bins start alike
    # and a bin resembles the memory cells at its place; ait_decoder.sine_coordinate_codes)
    coordinate_embedding: str = "learned"
    canvas: int = 640  # instance coordinate canvas (pixels)
    # (H, W) of the depth ground truth the tokenizer encodes: the training crop (480x480 -> 15x15 = 225
    # tokens in every paper config, the joint one included); fixes the depth sequence length
    depth_size: tuple[int, int] = (480, 480)
    # (H, W) the depth task's input *images* are zero-padded to (bottom/right) before the backbone; None =
    # depth_size. The joint config: the 640x640 COCO canvas (the original's padto=640, a 20x20 memory grid)
    # while the depth ground truth stays depth_size
    depth_image_size: tuple[int, int] | None = None
    depth_tokenizer: TokenizerRef | None = None
    mask_tokenizer: TokenizerRef | None = None

    def decoding_mode(self, task: str) -> str:
        """How `task` is trained and decoded: "parallel" (AiT-P) or "autoregressive" (AiT).

        `decoding[task]` where the config names the task, else `parallel` (the original's configs: AiT-P
        depth-only configs are parallel, every other one autoregressive).
        """
        return self.decoding.get(task, "parallel" if self.parallel else "autoregressive")


@dataclass
class LossConfig:
    depth_task_weight: float = 1.0  # weight of the whole depth loss in joint training (paper's joint: 0.2)
    depth_aux_weight: float = 1.0  # SILog on the soft-decoded depth
    silog_lambda: float = 0.5
    insseg_task_weight: float = 1.0
    box_weight: float = 1.0
    class_weight: float = 1.0
    mask_weight: float = 0.2
    mask_aux_weight: float = 5.0  # Dice + MSE of soft-decoded masks, x mask_weight per supervised mask token
    # box coordinates learned against a Gaussian over the neighbouring bins (standard deviation in bins)
    # instead of the exact bin: a box one bin off is then nearly right, not as wrong as any other bin.
    # 0 = the original's plain cross-entropy on the exact bin
    coord_sigma: float = 0.0
    # a dense auxiliary loss on the image memory (training only; ait.model.memory_boxes): each memory cell an
    # object covers is trained to name that object's corner bins and class through the decoder's own output
    # layer, weighted like one supervised token per (cell, role). 0 = off, as in the original
    memory_box_weight: float = 0.0
    # with the memory boxes and a fixed object order: each covered memory cell also names its object's place
    # in the sequence (first, second, ...), weighted like one supervised token per cell. 0 = off
    memory_rank_weight: float = 0.0
    # guided cross-attention (training only; ait.model.attention_guide): every position of a real object's
    # tokens is pushed to attend to the memory cells that object occupies (-log of the attention mass there,
    # heads mixed), weighted like one supervised token per position. 0 = off, as in the original
    attention_guide_weight: float = 0.0


@dataclass
class EvalConfig:
    sliding_window: bool = True  # two 480-wide windows at x=0 and x=160 (NYU)
    flip: bool = True
    min_depth: float = 1e-3
    max_depth: float = 10.0
    eigen_crop: bool = True
    clip_max: float | None = None  # BTS-style upper clip (None = the original: no upper clip)
    window_width: int | None = None  # sliding-window width; None = the width of data.crop_size
    score_threshold: float = 0.0  # instance detections below this score are not submitted to COCO eval
    # instance decodes fused per image (ait.evaluation.predict_instances_fused, ait_eval.fuse_detections):
    # nucleus samples of the image, and as many of its mirror image with instance_flip. 1 and False: the
    # original's single pass. Several decodes find objects a single one misses; weighted box fusion keeps
    # what they agree on, within each class at IoU > instance_fusion_iou
    instance_samples: int = 1
    instance_flip: bool = False
    instance_fusion_iou: float = 0.55


@dataclass
class DataConfig:
    """Where the images come from and how many per optimiser step.

    Batch sizes are *global*: images per task per optimiser step summed over all ranks, as DESIGN §4 states
    them (e.g. 24 NYU images; 60 COCO + 4 NYU in joint training). Each rank takes its share of every global
    batch, so a 2-process run sees exactly the images a 1-process run sees.
    """

    dataset: str = "synthetic"  # "synthetic" | "nyu" | "coco" | "joint" (joint = nyu + coco)
    nyu_root: str | None = None
    nyu_train_split: str | None = None  # BTS/GLPDepth split file (absolute, or relative to nyu_root)
    nyu_test_split: str | None = None
    coco_root: str | None = None
    coco_train_images: str = "train2017"  # relative to coco_root
    coco_train_ann: str = "annotations/instances_train2017.json"
    coco_val_images: str = "val2017"
    coco_val_ann: str = "annotations/instances_val2017.json"
    image_size: tuple[int, int] = (480, 640)  # full input (H, W); synthetic rooms are rendered at this size
    crop_size: tuple[int, int] = (480, 480)  # training crop for depth
    scale_range: tuple[float, float] = (0.1, 3.0)  # COCO scale jitter of the canvas in training
    augment: bool = (
        True  # flip, photometric jitter, CutDepth, scale jitter (off: the seeded training crop only)
    )
    depth_batch: int = 24
    insseg_batch: int = 0
    eval_batch: int = 1  # per rank
    # images (all tasks together) per process per forward pass; None = the whole per-process share of the
    # global batch. Set, it fixes optim.accumulate = sum of the global batches / (processes x images_per_gpu)
    # and must divide the per-process share exactly
    images_per_gpu: int | None = None
    synthetic_train_length: int = 2000
    synthetic_val_length: int = 64
    synthetic_seed: int = 0
    # objects placed in each synthetic room (the generator's range; fewer may be visible). With an instance
    # task the high end may not exceed model.max_objects: every object must fit the sequence
    synthetic_objects: tuple[int, int] = (3, 8)
    cache: bool = False  # keep rendered synthetic samples in memory (small demo datasets)
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.9
    grad_clip: float | None = 10.0
    max_iters: int = 25250
    warmup_iters: int = 500
    warmup_ratio: float = 0.1
    schedule: str = "step"  # "step" | "linear"
    step_milestones: tuple[int, ...] = (18180,)
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.01  # for "linear"
    # micro-batches per optimiser step: the global batch is split into `accumulate` forward/backward passes
    # per process, and every task's loss is still normalised by its token count over the whole global batch
    accumulate: int = 1
    # "fp16" (autocast + dynamic loss scaling; CUDA only, a CPU run stays fp32), "bf16" (autocast, no
    # scaler; CUDA from Ampere, or the CPU) or "none". true/false (older configs) mean fp16/none.
    # ait.engine.precision
    amp: str | bool = "fp16"
    # a moving average of the weights, evaluated and delivered instead of the last step's (ait.engine.ema);
    # 0 = off, as in the original; e.g. 0.998 averages over about the last 500 steps of a long run (its warm-up
    # keeps a short run's horizon near a ninth of the steps so far)
    ema_decay: float = 0.0


@dataclass
class CurriculumConfig:
    # The paper's curriculum in one run (its instance models start from a detection model, `load_from`): the
    # first `detection_iters` of optim.max_iters train box + class sequences (task "det", same backbone and
    # decoder), then instance segmentation starts from that model for the remaining steps, its box and class
    # slots' positions taken from the detection sequence's. 0 = no detection phase. Needs task "insseg".
    detection_iters: int = 0


@dataclass
class Config:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    seed: int = 0
    work_dir: str = "runs/default"
    load_from: str | None = None  # initialise from a detection-only model (insseg / joint)
    log_interval: int = 50
    eval_interval: int = 0  # 0 = only at the end
    checkpoint_interval: int = 1000
    keep_checkpoints: int = 2  # iteration checkpoints kept besides latest.pt (0 = keep all)
    # torch.use_deterministic_algorithms (+ cudnn deterministic, no cudnn benchmark on GPU). Off by default,
    # as the original: deterministic kernels cost GPU speed; CPU runs are reproducible for a seed either way
    deterministic: bool = False
    progress: bool = True  # tqdm progress bar on rank 0
    num_threads: int | None = None  # torch CPU threads per process (None: torch's default)

    # -- serialisation (the JSON stored with every checkpoint) -------------------------------------------
    def to_dict(self) -> dict:
        from ait.config.overrides import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """Inverse of `to_dict` (types restored; unknown keys are a ConfigError naming the nearest keys)."""
        from ait.config.overrides import from_dict

        return from_dict(cls, data)

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Config:
        import json

        return cls.from_dict(json.loads(text))

    def validate(self) -> Config:
        """Check ranges and cross-field consistency; raise ConfigError naming the key. Returns self."""
        from ait.config.validation import validate_config

        validate_config(self)
        return self
