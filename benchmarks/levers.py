"""The demo's instance levers, one complete run each: what buys learned instances at the demo's budget.

    python benchmarks/levers.py list
    python benchmarks/levers.py run LEVER [--steps 2000] [--threads 1] [--seed 0] --tokenizers DIR --out DIR
    torchrun --nproc-per-node 2 benchmarks/levers.py run LEVER --threads 1 ...   (two one-thread processes)
    python benchmarks/levers.py table benchmarks/levers/*.json

Each lever is `cpu_joint_demo` with a few options changed (LEVERS below), trained from scratch over the demo's
tokenizers (a demo run's `tokenizers/` folder: `ait demo --out DIR` writes DIR/tokenizers) for the given step
budget with its own warm-up and decay (never a snapshot of a longer run), and scored on the demo's 64
held-out rooms: box AP, AP50, mask AP (COCO, pycocotools) and depth RMSE. One JSON per run (`LEVER_sSEED.json`);
`table` prints the Markdown table of benchmarks/README.md. Seeded: the same command gives the same
figures on one machine; the minutes are the training's CPU time (one thread per process: what the run costs
an idle core; wall time on a shared machine also counts the neighbours).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import DEMO_KNOBS_BEFORE_TUNING, ONE_DECODE, fused_decoding_options

HERE = Path(__file__).resolve().parent

# every lever runs on top of the demo as it was before the levers were measured (peak lr 1e-3, box and class
# tokens weighted 1, mask tokens 0.2, scale jitter 0.75-1.25, the depth loss at full weight, objects in random
# order, no memory boxes; the demo itself now is the DEMO_LEVER row), so each stored row stays reproducible
LEVER_BASE = [
    *DEMO_KNOBS_BEFORE_TUNING,
    "loss.depth_task_weight=1.0",
    "model.object_order=random",
    "loss.memory_box_weight=0",
    "loss.attention_guide_weight=0",
]

# the memory-box recipe on top of LEVER_BASE (the memory_boxes_area_dw0.2 row); later rows add to it
DEMO_RECIPE = ["loss.depth_task_weight=0.2", "loss.memory_box_weight=0.5", "model.object_order=area"]

# the tuning on top of DEMO_RECIPE that later rows share: peak lr 2e-3, box and class tokens weighted 2, the instance
# images at their own scale
DEMO_TUNING = ["optim.lr=2e-3", "loss.box_weight=2.0", "loss.class_weight=2.0", "data.scale_range=[1.0,1.0]"]

# today's cpu_joint_demo on top of LEVER_BASE: DEMO_RECIPE, DEMO_TUNING and mask tokens weighted 0.4; the rows
# measured against the demo add their one change to it
DEMO_OPTIONS = [*DEMO_RECIPE, *DEMO_TUNING, "loss.mask_weight=0.4"]

# the row whose options, on top of LEVER_BASE, are today's cpu_joint_demo (a test holds them equal)
DEMO_LEVER = "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2_no_scale_jitter_mask_x2"

# not a config key: a lever that sets it trains in two chained parts, the second restarting the warm-up and decay
# (train_with_restart)
RESTART = "lever.restart_at"

# name -> (cfg options on top of cpu_joint_demo, what it changes). The first is the demo as it was before the
# levers were measured; steps scale with --steps unless the lever fixes its own.
LEVERS: dict[str, tuple[list[str], str]] = {
    "demo": ([], "the demo before the levers (random object order, 64 px, 8 + 8 images, lr 1e-3)"),
    "order_area": (["model.object_order=area"], "objects in the sequence largest first"),
    "order_raster": (["model.object_order=raster"], "objects in the sequence by top-left corner, row by row"),
    "detection_phase": (
        ["curriculum.detection_iters=0.3"],
        "the paper's curriculum: the first 30 % of the steps train box + class sequences (task det), "
        "then instance segmentation starts from that model",
    ),
    "detection_phase_70": (
        ["curriculum.detection_iters=0.7"],
        "a long detection phase: the first 70 % of the steps train box + class sequences (a detection step "
        "costs 0.6x an instance step), the last 30 % instance segmentation",
    ),
    "area_detection": (
        ["model.object_order=area", "curriculum.detection_iters=0.3"],
        "the two best single levers together: objects largest first, and the detection phase first",
    ),
    "size_96": (
        [
            "data.image_size=96,96",
            "data.crop_size=96,96",
            "model.canvas=96",
            "model.depth_size=96,96",
            "model.num_bins=96",
        ],
        "rooms rendered at 96 px (demo: 64; objects 9-45 px, a 12x12 memory)",
    ),
    "lr_2e-3": (["optim.lr=2e-3"], "peak learning rate 2e-3 (demo: 1e-3)"),
    "lr_5e-4": (["optim.lr=5e-4"], "peak learning rate 5e-4 (demo: 1e-3)"),
    "share_4_12": (["data.depth_batch=4", "data.insseg_batch=12"], "4 depth + 12 instance images per step"),
    "depth_weight_0.2": (
        ["loss.depth_task_weight=0.2"],
        "the paper's joint weighting: the depth loss x 0.2 against the instance loss (demo: 1.0), so the shared "
        "backbone and decoder follow instances more",
    ),
    "depth_weight_0.5": (["loss.depth_task_weight=0.5"], "the depth loss x 0.5 against the instance loss"),
    "decoder_3x128": (
        ["model.d_model=128", "model.num_decoder_layers=3", "model.dim_feedforward=384"],
        "a wider, deeper decoder (3 layers of 128, demo: 2 of 96): a step costs 1.25x the demo's, so 1600 "
        "steps fit its CPU minutes",
    ),
    "stride_4": (
        [
            'model.backbone_overrides={"depths": [2], "num_heads": [1], "window_sizes": [8], '
            '"shift_stages": [True], "pretrained_window_sizes": [0]}'
        ],
        "a 16x16 memory at 64 px: the backbone stops after its first stage (stride 4, demo: two stages, "
        "stride 8, an 8x8 memory): a step costs 1.3x the demo's, so 1500 steps fit its CPU minutes",
    ),
    "batch_4": (
        ["data.depth_batch=4", "data.insseg_batch=4"],
        "4 depth + 4 instance images per step (demo: 8 + 8): a step costs 0.6x the demo's, so 3400 steps fit "
        "its CPU minutes, 1.7x the updates on 0.85x the images",
    ),
    "coord_sigma_2": (
        ["loss.coord_sigma=2"],
        "box coordinates learned against a Gaussian over the neighbouring bins (2 bins = 2 px) instead of "
        "the exact bin",
    ),
    "wide": (
        [
            'model.backbone_overrides={"embed_dim": 64, "num_heads": [2, 4]}',
            "model.d_model=128",
            "model.dim_feedforward=512",
        ],
        "a model 2.5x as wide (backbone embed 64, decoder 128; 1.8M parameters against 0.72M), which uses the "
        "matmul units better: a step costs 1.5x the demo's",
    ),
    "simmim": (
        ["model.backbone_checkpoint={pretrained}"],
        "the backbone starts from self-supervised weights (SimMIM-style masked image modelling on the train "
        "split's images, no labels: benchmarks/pretrain_rooms.py)",
    ),
    "area_dw0.2": (
        ["loss.depth_task_weight=0.2", "model.object_order=area"],
        "with the paper's joint weighting (depth loss x 0.2), objects in the sequence largest first",
    ),
    "memory_boxes_dw0.2": (
        ["loss.depth_task_weight=0.2", "loss.memory_box_weight=0.5"],
        "with the paper's joint weighting (depth loss x 0.2), a dense auxiliary loss on the image memory: each "
        "memory cell an object covers names that object's corner bins and class through the decoder's output "
        "layer (weight 0.5 per cell and role; training only)",
    ),
    "memory_boxes_area_dw0.2": (
        [*DEMO_RECIPE],
        "the two best levers together, with the paper's joint weighting: the memory boxes, and objects in the "
        "sequence largest first",
    ),
    "coord_sine_dw0.2": (
        ["loss.depth_task_weight=0.2", "model.coordinate_embedding=sine"],
        "with the paper's joint weighting (depth loss x 0.2), the coordinate bins' embeddings start from the "
        "neck's sine code of their place on the memory grid (demo: random)",
    ),
    "memory_boxes0.25_area_dw0.2": (
        ["loss.depth_task_weight=0.2", "loss.memory_box_weight=0.25", "model.object_order=area"],
        "the demo's memory-box recipe with the memory boxes at half weight (0.25, demo: 0.5), to give the "
        "shared backbone back to depth",
    ),
    "memory_boxes_area_dw0.3": (
        ["loss.depth_task_weight=0.3", "loss.memory_box_weight=0.5", "model.object_order=area"],
        "the memory boxes and the area order with the depth loss x 0.3 instead of the demo's 0.2",
    ),
    "memory_boxes_area_dw0.2_share_4_12": (
        [
            *DEMO_RECIPE,
            "data.depth_batch=4",
            "data.insseg_batch=12",
        ],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) with 4 depth + 12 instance images per "
        "step (demo: 8 + 8): 24,000 instance images instead of 16,000",
    ),
    "memory_boxes_area_dw0.2_detection": (
        [
            *DEMO_RECIPE,
            "curriculum.detection_iters=0.3",
        ],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) after the paper's curriculum: the first "
        "30 % of the steps train box + class sequences (task det), then instance segmentation",
    ),
    "memory_boxes_area_dw0.2_detection_15": (
        [
            *DEMO_RECIPE,
            "curriculum.detection_iters=0.15",
        ],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) after a shorter detection phase: the "
        "first 15 % of the steps train box + class sequences (task det), then instance segmentation",
    ),
    "memory_boxes_area_dw0.2_ema": (
        [*DEMO_RECIPE, "optim.ema_decay=0.998"],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) scored and delivered as a moving average "
        "of the weights (decay 0.998; over 2000 steps its warm-up holds it near 0.9955); the JSON also scores "
        "the same run's last weights",
    ),
    "memory_boxes_area_dw0.2_restart": (
        [*DEMO_RECIPE, f"{RESTART}=0.3"],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) with the detection-phase curriculum's "
        "schedule but no detection phase: the first 30 % of the steps are a joint run with its own warm-up and "
        "decay, the rest a second joint run from its weights with a fresh warm-up and decay",
    ),
    "memory_boxes_area_dw0.2_batch_4": (
        [
            *DEMO_RECIPE,
            "data.depth_batch=4",
            "data.insseg_batch=4",
        ],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) with 4 depth + 4 instance images per "
        "step (demo: 8 + 8): 3400 steps fit its CPU minutes, 1.7x the updates on 0.85x the images",
    ),
    "memory_boxes_area_dw0.2_no_duplicates": (
        [
            *DEMO_RECIPE,
            "model.duplicate_boxes=none",
        ],
        "the demo's recipe (memory boxes, area order, depth loss x 0.2) with no duplicate boxes among the "
        "padding slots: every free slot a bad box away from the objects (the original: a uniform number of "
        "jittered duplicates whose class target is noise)",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3": (
        [*DEMO_RECIPE, "optim.lr=2e-3"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) at peak learning rate 2e-3 (that recipe: 1e-3)",
    ),
    "memory_boxes_area_dw0.2_box_class_x2": (
        [*DEMO_RECIPE, "loss.box_weight=2.0", "loss.class_weight=2.0"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) with each box coordinate and class token "
        "weighted 2 (that recipe: 1) against the mask tokens' 0.2, so the young decoder learns where objects are first",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2": (
        [*DEMO_RECIPE, "optim.lr=2e-3", "loss.box_weight=2.0", "loss.class_weight=2.0"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) at peak learning rate 2e-3 and with each "
        "box coordinate and class token weighted 2: the two levers above together",
    ),
    "memory_boxes_area_dw0.2_no_augment": (
        [*DEMO_RECIPE, "data.augment=false"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) without training augmentation (no flip, "
        "photometric jitter, CutDepth or scale jitter; the seeded training crop only)",
    ),
    "memory_boxes_area_dw0.2_no_scale_jitter": (
        [*DEMO_RECIPE, "data.scale_range=[1.0,1.0]"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) with the instance images at their own "
        "scale (that recipe: scale jitter 0.75-1.25); flips and the depth task's augmentation stay",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_no_scale_jitter": (
        [*DEMO_RECIPE, "optim.lr=2e-3", "data.scale_range=[1.0,1.0]"],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) at peak learning rate 2e-3 and with the "
        "instance images at their own scale",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2_no_scale_jitter": (
        [
            *DEMO_RECIPE,
            *DEMO_TUNING,
        ],
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) at peak learning rate 2e-3, with each box "
        "coordinate and class token weighted 2, and with the instance images at their own scale",
    ),
    "memory_boxes_area_dw0.3_lr_2e-3_box_class_x2_no_scale_jitter": (
        [
            *DEMO_RECIPE,
            "loss.depth_task_weight=0.3",
            *DEMO_TUNING,
        ],
        "the row above with the depth loss x 0.3 instead of 0.2, to win back the depth that the instance images at "
        "their own scale cost",
    ),
    "memory_boxes_area_dw0.2_lr_3e-3_box_class_x2_no_scale_jitter": (
        [
            *DEMO_RECIPE,
            "optim.lr=3e-3",
            "loss.box_weight=2.0",
            "loss.class_weight=2.0",
            "data.scale_range=[1.0,1.0]",
        ],
        "the memory-box recipe at peak learning rate 3e-3 (the demo's config: 2e-3), with each box coordinate and class "
        "token weighted 2 and the instance images at their own scale",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2_no_scale_jitter_mask_x2": (
        DEMO_OPTIONS,
        "the memory-box recipe (memory boxes, area order, depth loss x 0.2) at peak lr 2e-3, with box and class tokens "
        "x 2, the instance images at their own scale, and each mask token weighted 0.4 (the paper: 0.2): the demo's "
        "config",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2_no_scale_jitter_mask_x4": (
        [*DEMO_RECIPE, *DEMO_TUNING, "loss.mask_weight=0.8"],
        "the demo's config with each mask token weighted 0.8 (the demo: 0.4, the paper: 0.2), to see whether the "
        "mask-token weight's gain goes on",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x3_no_scale_jitter_mask_x2": (
        [*DEMO_OPTIONS, "loss.box_weight=3.0", "loss.class_weight=3.0"],
        "the demo's config with each box coordinate and class token weighted 3 (the demo: 2, the paper: 1)",
    ),
    "memory_boxes_area_dw0.2_lr_3e-3_box_class_x2_no_scale_jitter_mask_x2": (
        [*DEMO_OPTIONS, "optim.lr=3e-3"],
        "the demo's config at peak learning rate 3e-3 (the demo: 2e-3), which gave more box AP than 2e-3 before the "
        "mask tokens were weighted 0.4",
    ),
    "memory_boxes_area_dw0.2_lr_2e-3_box_class_x2_no_scale_jitter_mask_x2_no_layer_decay": (
        [*DEMO_OPTIONS, "optim.layer_decay=1.0"],
        "the demo's config with the backbone's layers at the full learning rate (the demo: layer decay 0.9, so its "
        "first layers train at 0.53x; the decay is meant for a pretrained backbone, the demo's starts from scratch)",
    ),
    "attention_guide_mb_area_dw0.2": (
        [
            *DEMO_RECIPE,
            "loss.attention_guide_weight=1.0",
        ],
        "the demo's memory-box recipe, and guided cross-attention: every position of a real object's tokens is "
        "pushed, in each decoder block, to attend to the memory cells that object occupies (weight 1.0 per "
        "position; training only)",
    ),
}


def resolve_options(options: list[str], steps: int) -> list[str]:
    """A lever's options for a run of `steps`: a fraction of the steps for the detection phase reads better in
    the table than a step count, so `curriculum.detection_iters=0.3` becomes 30 % of `steps`."""
    resolved = []
    for option in options:
        key, value = option.split("=", 1)
        if key in ("curriculum.detection_iters", RESTART) and "." in value:
            value = str(round(float(value) * steps))
        resolved.append(f"{key}={value}")
    return resolved


def split_restart(options: list[str]) -> tuple[list[str], int | None]:
    """(the config options, the restart step or None): `lever.restart_at` is for levers.py, not the config."""
    restart = [int(option.split("=", 1)[1]) for option in options if option.startswith(f"{RESTART}=")]
    return [option for option in options if not option.startswith(f"{RESTART}=")], (restart or [None])[-1]


def train_with_restart(cfg, first_steps: int, **trainer_kwargs):
    """The detection-phase curriculum's schedule without its detection phase: `cfg` for `first_steps` steps with
    their own warm-up and decay, then the rest of `optim.max_iters` from those weights with a fresh warm-up and
    decay, as the curriculum's instance phase. Tells the curriculum's phase apart from its second schedule."""
    from ait.engine.curriculum import _save_weights, schedule_part
    from ait.engine.trainer import Trainer

    first = schedule_part(cfg, 0, first_steps)
    first.work_dir = str(Path(cfg.work_dir) / "first_part")
    part = Trainer(first.validate(), **trainer_kwargs)
    part.train()
    weights = Path(first.work_dir) / "first_part_final.pt"
    _save_weights(part.model, weights)
    del part
    second = schedule_part(cfg, first_steps, cfg.optim.max_iters)
    second.load_from = str(weights)
    trainer = Trainer(second.validate(), **trainer_kwargs)
    return trainer, trainer.train()


def run(
    lever: str,
    steps: int,
    threads: int,
    seed: int,
    tokenizers: Path,
    out: Path,
    pretrained: Path | None = None,
) -> dict | None:
    import torch
    from _common import run_figures

    from ait.config import apply_overrides
    from ait.data import build_eval_loader, coco_ground_truth
    from ait.demo import _mean_train_depth, demo_configs
    from ait.engine import cleanup_distributed, evaluate_solver, init_distributed
    from ait.engine.curriculum import train_with_curriculum
    from ait.evaluation import evaluate_instances, mean_depth_baseline

    options, note = LEVERS[lever]
    if any("{pretrained}" in option for option in options):
        if pretrained is None or not pretrained.is_file():
            sys.exit(
                f"levers: error: lever {lever} needs --pretrained FILE (benchmarks/pretrain_rooms.py writes one)"
            )
        options = [option.replace("{pretrained}", str(pretrained)) for option in options]
    depth_ckpt, mask_ckpt = (
        tokenizers / "depth" / "final.safetensors",
        tokenizers / "mask" / "final.safetensors",
    )
    for path in (depth_ckpt, mask_ckpt):
        if not path.is_file():
            sys.exit(f"levers: error: {path} is missing; pass --tokenizers DIR/tokenizers of a demo run")
    torch.set_num_threads(threads)
    dist_info = init_distributed("cpu")  # under torchrun: one process per rank, the global batch split
    # every rank must train in the same folder: rank 0's name, agreed through the environment's seed
    tmp_root = Path(tempfile.gettempdir()) / f"ait_lever_{lever}_s{seed}_{steps}"
    with tempfile.TemporaryDirectory(prefix=f"ait_lever_{lever}_") as own_tmp:
        tmp = tmp_root if dist_info.world_size > 1 else Path(own_tmp)
        base = [
            *LEVER_BASE,
            f"optim.max_iters={steps}",
            f"optim.warmup_iters={max(1, steps // 20)}",
            "checkpoint_interval=0",
            f"num_threads={threads}",
            f"seed={seed}",
            "progress=False",
            f"work_dir={Path(tmp) / 'solver'}",
            *ONE_DECODE,  # every row is scored as the stored ones were; the demo's fused figures come beside
        ]
        resolved = resolve_options(options, steps)
        config_options, restart = split_restart(resolved)
        _, _, solver_cfg = demo_configs(tmp, cfg_options=base + config_options)
        cfg = solver_cfg(depth_ckpt, mask_ckpt)
        cpu_start = time.process_time()
        if restart:
            trainer, trained = train_with_restart(cfg, restart, evaluate=False, dist_info=dist_info)
        else:
            trainer, trained = train_with_curriculum(cfg, evaluate=False, dist_info=dist_info)
        # CPU seconds of this process: with one thread, what the run costs an idle core, whatever else the
        # machine was doing (wall minutes on a shared machine measure the neighbours too)
        train_cpu_minutes = (time.process_time() - cpu_start) / 60
        solver = trainer.model.eval()
        cleanup_distributed()  # every rank leaves together; rank 0 evaluates alone
        if not dist_info.is_main:
            return None
        start = time.perf_counter()
        metrics = evaluate_solver(cfg, solver)
        eval_s = time.perf_counter() - start
        # the same solver's instances scored as the demo scores them: several decodes per image, fused
        fused = {}
        if "insseg" in cfg.model.tasks:
            fused_cfg = apply_overrides(copy.deepcopy(cfg), fused_decoding_options()).validate()
            fused = evaluate_instances(
                solver,
                build_eval_loader(fused_cfg, "insseg"),
                coco_ground_truth(fused_cfg),
                fused_cfg.eval,
                generator=torch.Generator().manual_seed(fused_cfg.seed),
            )
        last_weights = None
        if cfg.optim.ema_decay:
            # the run delivers its weight average; the last step's own weights, from the final checkpoint,
            # are scored too: the same run with and without the average, side by side
            last_weights = run_figures(
                score_checkpoint_weights(solver, trained.checkpoint, lambda: evaluate_solver(cfg, solver)),
                trained,
                eval_s,
            )
        baseline = mean_depth_baseline(_mean_train_depth(cfg), build_eval_loader(cfg, "depth"), cfg.eval)
    suffix = f"_p{dist_info.world_size}" if dist_info.world_size > 1 else ""
    if suffix:
        note += f"; {dist_info.world_size} one-thread processes (DDP, gloo) share each step's batch"
    result = {
        "lever": lever + suffix,
        "note": note,
        "cfg_options": resolved,
        "steps": steps,
        "seed": seed,
        "torch_threads": threads,
        "processes": dist_info.world_size,
        "baseline_rmse": baseline["rmse"],
        "train_cpu_minutes": train_cpu_minutes,
        **run_figures(metrics, trained, eval_s),
    }
    if fused:
        result["fused_decoding"] = {
            "options": fused_decoding_options(),
            "box_ap": fused["bbox"]["AP"],
            "box_ap50": fused["bbox"]["AP50"],
            "mask_ap": fused["segm"]["AP"],
            "mask_ap50": fused["segm"]["AP50"],
        }
    if last_weights is not None:
        result["last_weights"] = {
            key: last_weights[key] for key in ("depth_rmse", "depth_abs_rel", "box_ap", "box_ap50", "mask_ap")
        }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{lever}{suffix}_s{seed}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


def score_checkpoint_weights(solver, checkpoint: Path, score):
    """`score()` with the solver holding the weights stored in `checkpoint` (a run's final checkpoint holds its
    last step's own weights, where the solver may hold their moving average); the solver's weights are put
    back afterwards, whatever `score` does."""
    from ait.engine import load_checkpoint

    held = {key: value.clone() for key, value in solver.state_dict().items()}
    solver.load_state_dict(load_checkpoint(checkpoint)["model"])
    try:
        return score()
    finally:
        solver.load_state_dict(held)


def table(paths: list[Path]) -> str:
    """Markdown table, one row per lever (median over its seeds, range when there are several)."""
    runs: dict[str, list[dict]] = {}
    for path in paths:
        result = json.loads(path.read_text())
        runs.setdefault(result["lever"], []).append(result)

    def cell(values: list[float], scale: float, fmt: str, unit: str) -> str:
        values = [v * scale for v in values]
        text = format(statistics.median(values), fmt) + unit
        if len(values) > 1:
            text += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
        return text

    lines = [
        "| lever | what changes | steps | seeds | box AP | box AP50 | mask AP | depth RMSE (x mean) "
        "| train CPU min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [name for name in LEVERS if name in runs] + sorted(set(runs) - set(LEVERS))
    for name in order:
        results = runs[name]

        def get(key: str, results: list[dict] = results) -> list[float]:
            return [r[key] for r in results]

        ratio = [r["depth_rmse"] / r["baseline_rmse"] for r in results]
        lines.append(
            f"| {name} | {results[0]['note']} | {results[0]['steps']} | {len(results)} "
            f"| {cell(get('box_ap'), 100, '.1f', ' %')} | {cell(get('box_ap50'), 100, '.1f', ' %')} "
            f"| {cell(get('mask_ap'), 100, '.1f', ' %')} "
            f"| {cell(get('depth_rmse'), 1, '.3f', ' m')} ({statistics.median(ratio):.2f}x) "
            f"| {cell([r.get('train_cpu_minutes', float('nan')) for r in results], 1, '.1f', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the levers and what each changes")
    one = sub.add_parser("run", help="one complete run of one lever")
    one.add_argument("lever", choices=sorted(LEVERS))
    one.add_argument("--steps", type=int, default=2000)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--tokenizers", type=Path, required=True)
    one.add_argument("--out", type=Path, default=HERE / "levers")
    one.add_argument("--pretrained", type=Path, help="backbone weights for the simmim lever")
    tab = sub.add_parser("table", help="the Markdown table of stored runs")
    tab.add_argument("paths", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, (options, note) in LEVERS.items():
            print(f"{name:16s} {' '.join(options) or '(none)':60s} {note}")
    elif args.command == "run":
        if args.steps <= 0 or args.threads <= 0:
            parser.error("--steps and --threads must be positive")
        run(args.lever, args.steps, args.threads, args.seed, args.tokenizers, args.out, args.pretrained)
    else:
        print(table(args.paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
