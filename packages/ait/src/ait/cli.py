"""Command line: `ait train|eval|predict|demo|tokenizer train|configs|show-config` (also `python -m ait`).

    ait train swinv2b_480reso_depthonly --cfg-options data.nyu_root=data/nyu_depth_v2 \\
        model.task_heads.depth.vae_cfg.pretrained=vqvae_depth.safetensors
    torchrun --nproc-per-node 8 -m ait train swinv2b_480reso_depthonly --cfg-options ...
    ait train --resume work_dirs/swinv2b_480reso_depthonly      # the run's saved config, nothing repeated
    ait eval --checkpoint work_dirs/swinv2b_480reso_depthonly     # its newest checkpoint and config
    ait predict photos/ room.png --checkpoint work_dirs/swinv2b_480reso_depthonly --out predictions/
    ait tokenizer train ait_depth_vqvae --cfg-options nyu_root=data/nyu_depth_v2 --out vqvae_depth
    ait convert-original vqvae_depth.pt vqvae_depth.safetensors   # the original release's files
    ait demo

Bad input (unknown config or key, wrong value type, missing dataset/checkpoint/image, a folder without
images, a checkpoint of another config, a NaN loss) ends with one `ait: error: ...` line and exit status 2;
`ait predict` skips a file that is not an image with an `ait: warning:` line naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


def _add_cfg_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. optim.lr=1e-4 data.image_size=480,640 (the original's mmcv "
        "spellings such as model.task_heads.depth.vae_cfg.pretrained=... are accepted)",
    )


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_DIR|CHECKPOINT",
        help="a run folder (its newest checkpoint), one of its checkpoints, or an original release file",
    )
    parser.add_argument(
        "--config",
        dest="config_name",
        metavar="NAME",
        help="use this registered config instead of the one saved with the checkpoint (the original's "
        "files of the w/o-soft-token ablations need it)",
    )
    _add_cfg_options(parser)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ait", description="AiT (All in Tokens) task-solver: train, evaluate, predict, demo."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also AIT_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a task-solver config (runs under torchrun as well)")
    p.add_argument(
        "config",
        nargs="?",
        help="registered config name (see `ait configs`); not needed with --resume RUN_DIR",
    )
    _add_cfg_options(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR|CHECKPOINT",
        help="continue a run with its own saved config: from RUN_DIR's newest checkpoint, from CHECKPOINT, or "
        "(no path) from the newest checkpoint of the config's work_dir; --cfg-options change it on top",
    )
    p.add_argument("--work-dir", help="shorthand for --cfg-options work_dir=...")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at eval_interval / the end")

    p = sub.add_parser("eval", help="evaluate a checkpoint on its config's held-out split")
    p.add_argument(
        "config",
        nargs="?",
        help="registered config name; default: the config saved with the checkpoint (same as --config)",
    )
    _add_checkpoint_options(p)
    p.add_argument("--out", help="also write the metrics as JSON here")

    p = sub.add_parser(
        "predict",
        help="predict depth and instances for image files, folders and globs",
        description="Per image: NAME_depth.npy (float32 metres), NAME_depth.png (uint16 millimetres), "
        "NAME_depth_color.png, NAME_instances.png (overlay); per run: coco_results.json and coco_images.json "
        "(COCO results with RLE masks, readable by pycocotools' loadRes). Input folders are mirrored under "
        "--out; existing files that ait predict did not write are never replaced.",
    )
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, folders (searched recursively), globs"
    )
    _add_checkpoint_options(p)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")

    p = sub.add_parser("demo", help="the end-to-end demo on synthetic rooms (tokenizers + joint solver)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output/)")
    p.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test, not meaningful)")
    p.add_argument(
        "--processes",
        type=int,
        default=2,  # ait.demo.DEMO_PROCESSES (a test keeps them equal; importing the demo here costs time)
        help="processes that train the solver together, sharing its threads (default 2: two one-thread "
        "processes use a 2-core CPU better than one; 1: train in this process)",
    )
    _add_cfg_options(p)

    p = sub.add_parser("tokenizer", help="tokenizer (VQ-VAE) commands")
    tok = p.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND")
    t = tok.add_parser("train", help="train a tokenizer config (ait_depth_vqvae, ait_insseg_vqvae, cpu_*)")
    t.add_argument("config")
    _add_cfg_options(t)
    t.add_argument("--out", help="output folder (default: work_dirs/CONFIG)")
    # the same options as ait-tokenizer-train (ait_tokenizer.train.add_training_arguments; a test keeps the
    # two in step): the library's error hints name them
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--no-resume",
        action="store_true",
        help="start over in --out (by default a run of the same config there is continued; a run of another "
        "config is refused)",
    )

    p = sub.add_parser(
        "convert-original",
        help="convert a file of the original release (VQ-VAE or task-solver) to our formats",
        description="Write IN (the original's vqvae_*.pt, a task-solver checkpoint of one of its nine configs, "
        "or ait_det_swinv2b_wodec.pth) to OUT in our format (a safetensors tokenizer, or a task-solver "
        "checkpoint), printing every key mapped, dropped, filled or missing. Nothing is written unless every "
        "key fits.",
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--config", help="the task-solver config the file was trained with (default: inferred)")
    _add_cfg_options(p)

    p = sub.add_parser("configs", help="list the registered configs")
    p.add_argument("--kind", choices=("solver", "tokenizer"))

    p = sub.add_parser("show-config", help="print a config (with overrides) as JSON")
    p.add_argument("config")
    _add_cfg_options(p)
    return parser


# ---------------------------------------------------------------------------------------------- commands


def _solver_config(name: str, options: list[str]):
    from ait.config import ConfigError, config_kind, create_config

    if config_kind(name) != "solver":
        raise ConfigError(f"{name!r} is a tokenizer config: use `ait tokenizer train {name}`")
    return create_config(name, options)


def _resumed_config(resume: str, name: str | None, options: list[str]):
    """The config a resumed run continues with: the one saved in its checkpoint, `options` on top.

    The run folder is the work_dir unless `options` move it; a config name, if given, must be the run's.
    """
    from ait.config import ConfigError, apply_overrides
    from ait.engine.checkpoint import read_saved_config, resolve_checkpoint, run_dir_of

    checkpoint = resolve_checkpoint(resume)
    cfg = read_saved_config(checkpoint)
    if name is not None and name != cfg.name:
        raise ConfigError(
            f"--resume {resume}: that run was trained with config {cfg.name!r}, not {name!r}: leave the config "
            "name out (the run's saved config is used)"
        )
    cfg.work_dir = str(run_dir_of(checkpoint))
    cfg = apply_overrides(cfg, options).validate()
    # The checkpoint holds every weight: the files the run was initialised from are not needed to continue
    # it (a relative path from another folder, another machine), so a missing one is not asked for.
    from ait.engine.preflight import BACKBONE_FROM_SCRATCH

    if cfg.load_from is not None and not Path(cfg.load_from).is_file():
        print(
            f"resume: load_from {cfg.load_from} is not here; the weights come from {checkpoint}", flush=True
        )
        cfg.load_from = None
    backbone = cfg.model.backbone_checkpoint
    if backbone not in (None, BACKBONE_FROM_SCRATCH) and not Path(backbone).is_file():
        print(f"resume: model.backbone_checkpoint {backbone} is not here; the weights come from {checkpoint}")
        cfg.model.backbone_checkpoint = BACKBONE_FROM_SCRATCH
    return cfg, checkpoint


def _cmd_train(args: argparse.Namespace) -> int:
    from ait.config import ConfigError
    from ait.engine import Trainer, cleanup_distributed, init_distributed

    options = list(args.cfg_options) + ([f"work_dir={args.work_dir}"] if args.work_dir else [])
    resume = args.resume
    if isinstance(resume, str):  # a run folder or a checkpoint: its saved config, not the registry's
        cfg, resume = _resumed_config(resume, args.config, options)
    elif args.config is None:
        raise ConfigError(
            "ait train needs a config name (see `ait configs`), or --resume RUN_DIR to continue a run"
        )
    else:
        cfg = _solver_config(args.config, options)
        if resume:
            from ait.engine.checkpoint import find_latest_checkpoint

            latest = find_latest_checkpoint(cfg.work_dir)
            if latest is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint in {cfg.work_dir}/checkpoints (name the run: --resume RUN_DIR)"
                )
            cfg, resume = _resumed_config(str(latest), args.config, options)
    dist_info = init_distributed(args.device)
    try:
        if dist_info.is_main:
            print(f"effective config ({cfg.name}):\n{cfg.to_json()}", flush=True)
        trainer = Trainer(cfg, dist_info=dist_info, evaluate=not args.no_eval)
        trainer.train(resume=resume)
    finally:
        cleanup_distributed()
    return 0


def _checkpoint_config(args: argparse.Namespace):
    """The --config NAME (or the positional name) as a solver Config, or None: the checkpoint's own."""
    from ait.config import ConfigError

    positional = getattr(args, "config", None)
    if positional and args.config_name and positional != args.config_name:
        raise ConfigError(
            f"two config names given ({positional!r} and --config {args.config_name!r}): give one"
        )
    name = args.config_name or positional
    return _solver_config(name, []) if name else None


def _print_metrics(cfg, metrics: dict) -> None:
    from ait.evaluation import format_results_table

    coco = metrics.get("insseg") or metrics.get("det")
    print(format_results_table(metrics.get("depth"), coco, name=cfg.name))


def _cmd_eval(args: argparse.Namespace) -> int:
    from ait.engine import cleanup_distributed, evaluate_solver, init_distributed
    from ait.engine.inference import load_solver

    cfg = _checkpoint_config(args)
    if args.out:  # before the (long) evaluation: --out never replaces the checkpoint or another one
        from ait.outputs import check_output_file

        check_output_file(args.out, "--out", inputs=[args.checkpoint])
    _check_device(args.device)
    dist_info = init_distributed(args.device)
    try:
        solver, cfg = load_solver(
            args.checkpoint, cfg, device=dist_info.device, overrides=list(args.cfg_options) or None
        )
        metrics = evaluate_solver(cfg, solver, dist_info)
        if dist_info.is_main:
            _print_metrics(cfg, metrics)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                # strict JSON: a NaN (e.g. AP without ground truth) is written as null, never as NaN
                text = json.dumps(_json_safe(metrics), indent=2, allow_nan=False)
                Path(args.out).write_text(text, encoding="utf-8")
    finally:
        cleanup_distributed()
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import ait
    from ait.engine.checkpoint import resolve_checkpoint
    from ait.predict import collect_images, plan_outputs, predict_planned

    out = Path(args.out)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, received {args.batch_size}")
    # every input found and its header checked before the (slow) solver is loaded
    planned, skipped = plan_outputs(collect_images(args.images, exclude=out), out)
    _check_device(args.device)
    solver = ait.load(
        args.checkpoint, device=args.device, config=_checkpoint_config(args), cfg_options=args.cfg_options
    )
    protected = [resolve_checkpoint(args.checkpoint)]
    done = predict_planned(solver, planned, out, args.batch_size, protected, skipped=skipped)
    skipped = f", {len(done['skipped'])} skipped" if done["skipped"] else ""
    print(f"predicted {len(done['images'])} image(s){skipped}: {len(done['written'])} files in {out}")
    if done["results"] is not None:
        print(f"COCO results: {done['results']} (images and categories: {out / 'coco_images.json'})")
    return 0


def _json_safe(value):
    import math

    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_device(device: str | None) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda requested but CUDA is not available on this machine: use --device cpu"
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    from ait.demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick, cfg_options=args.cfg_options, processes=args.processes)
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from ait.config import ConfigError, config_kind, create_config
    from ait_tokenizer.train import apply_training_arguments, train_tokenizer

    if config_kind(args.config) != "tokenizer":
        raise ConfigError(f"{args.config!r} is a task-solver config: use `ait train {args.config}`")
    cfg = create_config(args.config, args.cfg_options)  # --cfg-options in the registry's typed syntax
    cfg = apply_training_arguments(cfg, argparse.Namespace(**{**vars(args), "cfg_options": []}))
    print(f"effective tokenizer config ({args.config}):\n{json.dumps(cfg.to_dict(), indent=2)}", flush=True)
    out = Path(args.out or f"work_dirs/{args.config}")
    final = train_tokenizer(cfg, out)
    print(f"tokenizer checkpoint: {final}")
    return 0


def _cmd_convert_original(args: argparse.Namespace) -> int:
    from ait.original import convert_original

    convert_original(args.input, args.output, args.config, args.cfg_options)
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from ait.config import config_kind, describe_config, list_configs

    names = list_configs(kind=args.kind)
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {config_kind(name):<9}  {describe_config(name)}")
    return 0


def _cmd_show_config(args: argparse.Namespace) -> int:
    from ait.config import create_config

    cfg = create_config(args.config, args.cfg_options)
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "predict": _cmd_predict,
    "demo": _cmd_demo,
    "convert-original": _cmd_convert_original,
    "configs": _cmd_configs,
    "show-config": _cmd_show_config,
}


DEBUG_ENV = "AIT_DEBUG"  # AIT_DEBUG=1 (or --debug): the full traceback instead of the one-line error


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import os
    import signal
    import threading

    from ait.engine.trainer import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere on the line, not only before the command: the error line says "rerun with --debug"
    debug_anywhere = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _cmd_tokenizer_train if args.command == "tokenizer" else _COMMANDS[args.command]
    debug = debug_anywhere or args.debug or bool(os.environ.get(DEBUG_ENV))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops like Ctrl-C
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("ait: interrupted (continue a training run with --resume)", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        # expected bad input (ConfigError is a ValueError; OSError covers unwritable/full folders): one line
        expected = isinstance(error, (ValueError, OSError, ArithmeticError, NonFiniteLossError))
        text = " ".join(str(error).split()) or type(error).__name__
        if not expected:
            text = f"unexpected {type(error).__name__}: {text} (rerun with --debug for the traceback)"
        print(f"ait: error: {text}", file=sys.stderr)
        return 2 if expected else 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
