"""The original release's task-solver files, read into our task-solver, and `ait convert-original`.

The original (GitHub SwinTransformer/AiT) saves mmcv runner files: ``{'meta', 'state_dict', 'optimizer'}``;
only ``state_dict`` is read here, with ``torch.load(weights_only=True)`` (``ait_tokenizer.original``), so a
file never runs code. Its ``AiT`` module holds ``backbone`` (SwinV2), ``transformer`` (``ARTransformer``:
neck + decoder) and one head per task (``det_head``, ``insseg_head``, ``depth_head``); each head keeps a
reference to the same transformer (``<task>_head.transformer.*``, duplicates) and its own frozen
``vqvae`` copy. Key by key:

==================================================  =================================================
original                                            ours
==================================================  =================================================
``backbone.*``                                      ``backbone.*`` (ait_backbone's SimMIM/original map)
``transformer.input_proj`` / ``stem_ln``            ``decoder.neck.input_proj`` / ``input_norm``
``transformer.encoder.blocks.i.attn.{wq,wk,wv}``    ``decoder.neck.blocks.i.attn.qkv`` (concatenated)
``transformer.encoder.blocks.i.{norm1,norm2,mlp}``  ``decoder.neck.blocks.i.{norm1,norm2,mlp}``
``transformer.encout_ln`` / ``proj`` / ``proj_ln``  ``decoder.neck.blocks_norm`` / ``out_proj`` / ``out_norm``
``transformer.proj_mlp`` / ``proj_mlp_ln``          ``decoder.neck.out_mlp`` / ``out_mlp_norm``
``transformer.decoder.blocks.i.attn.{wq,wk,wv}``    ``decoder.blocks.i.self_attn.qkv`` (concatenated)
``transformer.decoder.blocks.i.crossattn.wq``       ``decoder.blocks.i.cross_attn.q``
``transformer.decoder.blocks.i.crossattn.{wk,wv}``  ``decoder.blocks.i.cross_attn.kv`` (concatenated)
``transformer.decoder.blocks.i.crossattn.proj``     ``decoder.blocks.i.cross_attn.proj``
``transformer.norm``                                ``decoder.final_norm``
``transformer.voc_embed`` / ``outp_bias``           ``decoder.token_embed.weight`` / ``output_bias``
``transformer.det_embed[task_id]``                  ``decoder.task_prompts.<task>``
``transformer.dec_embed[task_id, :T]``              ``decoder.task_positions.<task>`` (T = our length)
``transformer.mask_embed`` (AiT-P)                  ``decoder.mask_embed``
``transformer.enc_embed`` (sine buffer)             recomputed (checked equal), dropped
``<task>_head.transformer.*``                       dropped: duplicates of ``transformer.*``
``<task>_head.vqvae.*``                             the frozen tokenizer, or dropped when the config names one
``insseg_head.loss_seq.weight``                     dropped: CE class weights (ours come from the config)
==================================================  =================================================

Task ids are the original configs': det 0, insseg 1, depth 2. Prompt rows and position rows of tasks a
config does not use are dropped, as are position rows past our sequence length.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ait_tokenizer.original import (
    ConversionReport,
    convert_original_vqvae,
    extract_original_vqvae,
    is_safetensors_file,
    safe_torch_load,
)

__all__ = [
    "TASK_IDS",
    "convert_original",
    "convert_original_solver",
    "extract_original_solver",
    "infer_original_config",
    "load_original_solver",
    "original_initial_weights",
    "read_original_solver",
]

TASK_IDS = {"det": 0, "insseg": 1, "depth": 2}
_HEADS = {"det": "det_head.", "insseg": "insseg_head.", "depth": "depth_head."}
_TOKENIZER_OWNER = {"depth": "depth_head.tokenizer.", "insseg": "instance_head.tokenizer."}
_TOKENIZER_KIND = {"depth": "depth", "insseg": "mask"}

# Neck / decoder modules whose parameters keep their inner names (weight, bias, fc1.*, fc2.*).
_RENAMED_MODULES = {
    "input_proj": "decoder.neck.input_proj",
    "stem_ln": "decoder.neck.input_norm",
    "encout_ln": "decoder.neck.blocks_norm",
    "proj": "decoder.neck.out_proj",
    "proj_ln": "decoder.neck.out_norm",
    "proj_mlp": "decoder.neck.out_mlp",
    "proj_mlp_ln": "decoder.neck.out_mlp_norm",
    "norm": "decoder.final_norm",
}
_BLOCK = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_ATTN = re.compile(r"^(attn|crossattn)\.(wq|wk|wv|proj)\.(weight|bias)$")
_PLAIN = re.compile(r"^(norm[123]|mlp\.fc[12])\.(weight|bias)$")
# The original SwinV2's own names: merging at the end of stage 0, `rpe_mlp`, `norm3` (ours: timm's).
_ORIGINAL_BACKBONE = re.compile(r"^backbone\.(layers\.0\.downsample\.|norm3\.|.*\.rpe_mlp\.)")


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


# --------------------------------------------------------------------------------------------- reading
def extract_original_solver(content: Any) -> dict[str, torch.Tensor] | None:
    """The original AiT model's state dict inside ``content`` (an mmcv runner file's ``state_dict``, a
    bare state dict, a DDP ``module.`` prefix removed), or None when ``content`` is not one."""
    if not isinstance(content, Mapping):
        return None
    state = content.get("state_dict") if isinstance(content.get("state_dict"), Mapping) else content
    if isinstance(state.get("module"), Mapping):
        state = state["module"]
    tensors = {
        key.removeprefix("module."): value
        for key, value in state.items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    has_transformer = any(
        key.startswith("transformer.") or re.match(r"^(det|insseg|depth)_head\.transformer\.", key)
        for key in tensors
    )
    # A file reduced to the backbone (e.g. a "w/o decoder" export) still speaks the original's layout.
    original_backbone = not any(key.startswith("decoder.") for key in tensors) and any(
        _ORIGINAL_BACKBONE.match(key) for key in tensors
    )
    return tensors if has_transformer or original_backbone else None


def read_original_solver(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The original model's state dict if ``path`` holds one (by content, not name); None for our own
    checkpoints and for files that are not an original AiT model. A file holding code is refused
    (ValueError), never run."""
    path = Path(path)
    if not path.is_file() or is_safetensors_file(path):
        return None
    try:  # memory-mapped: telling our own (large) checkpoints apart costs no full read
        return extract_original_solver(
            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        )
    except Exception:  # legacy or allow-listed files: the safe reader below decides
        pass
    try:
        content = safe_torch_load(path, what="checkpoint")
    except ValueError as error:
        if str(error).startswith("refused"):
            raise
        return None  # unreadable: the caller's own reader reports it
    return extract_original_solver(content)


def _meta_step(content: Any) -> int:
    """The iteration an mmcv runner file was saved at (``meta['iter']``), else 0."""
    meta = content.get("meta") if isinstance(content, Mapping) else None
    step = meta.get("iter") if isinstance(meta, Mapping) else None
    return int(step) if isinstance(step, int) else 0


def infer_original_config(
    state: Mapping[str, torch.Tensor], source: str = "the checkpoint"
) -> tuple[str, str]:
    """(registry name, note) of the original config that wrote ``state``, from its heads and shapes.

    The soft-token configs and their w/o-soft-token ablations hold the same weights; the soft one is
    assumed (the note says so).
    """
    tasks = sorted(task for task, prefix in _HEADS.items() if any(k.startswith(prefix) for k in state))
    patch = state.get("backbone.patch_embed.proj.weight")
    if not tasks or patch is None:
        raise ValueError(
            f"cannot tell which original config wrote {source} (no task heads or backbone found): name it, "
            "e.g. `ait convert-original IN OUT --config swinv2b_480reso_depthonly` or `ait eval CONFIG`"
        )
    size = {128: "b", 192: "l"}.get(int(patch.shape[0]))
    parallel = "transformer.mask_embed" in state
    name = None
    if tasks == ["depth"] and size is not None:
        name = f"swinv2{size}_480reso_{'parallel_' if parallel else ''}depthonly"
    elif size == "b" and not parallel:
        name = {
            ("det",): "swinv2b_640reso_detonly",
            ("insseg",): "swinv2b_640reso_inssegonly",
            ("depth", "insseg"): "swinv2b_640reso_joint",
        }.get(tuple(tasks))
    if name is None:
        raise ValueError(
            f"{source}: no original config has tasks {tasks} with a backbone of width {int(patch.shape[0])}"
            f"{' and AiT-P' if parallel else ''}; name the config with --config"
        )
    note = f"config {name!r} inferred from the file's heads and shapes"
    if name in ("swinv2b_480reso_depthonly", "swinv2b_640reso_inssegonly"):
        note += f" (its w/o-soft-token ablation {name}_wosoft has the same weights: pass --config for it)"
    return name, note


# --------------------------------------------------------------------------------------------- mapping
def _transformer_target(rest: str) -> tuple[str, int, int] | None:
    """Our key, slot and slot count for ``transformer.<rest>`` (slots: q/k/v concatenated), or None."""
    block = _BLOCK.match(rest)
    if block:
        where, index, tail = block.groups()
        base = f"decoder.neck.blocks.{index}." if where == "encoder" else f"decoder.blocks.{index}."
        attn = _ATTN.match(tail)
        if attn:
            module, proj, param = attn.groups()
            if module == "attn":
                own = "attn" if where == "encoder" else "self_attn"
                if proj == "proj":
                    return f"{base}{own}.proj.{param}", 0, 1
                return f"{base}{own}.qkv.{param}", "qkv".index(proj[1]), 3
            if where == "encoder":
                return None
            if proj == "wq":
                return f"{base}cross_attn.q.{param}", 0, 1
            if proj == "proj":
                return f"{base}cross_attn.proj.{param}", 0, 1
            return f"{base}cross_attn.kv.{param}", "kv".index(proj[1]), 2
        if _PLAIN.match(tail) and not (where == "encoder" and tail.startswith("norm3")):
            return base + tail, 0, 1
        return None
    module, _, inner = rest.partition(".")
    if module in _RENAMED_MODULES and inner:
        return f"{_RENAMED_MODULES[module]}.{inner}", 0, 1
    return None


def _task_layout(model: torch.nn.Module) -> dict[str, int]:
    decoder = getattr(model, "decoder", None)
    tasks = getattr(getattr(decoder, "config", None), "tasks", None)
    if not isinstance(tasks, Mapping) or not hasattr(model, "backbone"):
        raise ValueError("original AiT checkpoints load into the task-solver (ait.model.TaskSolver) only")
    return dict(tasks)


def convert_original_solver(
    state: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    source: str = "the checkpoint",
    *,
    tokenizers_from_heads: Mapping[str, bool] | None = None,
    strict: bool = True,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map the original model's ``state`` onto ``model`` (a TaskSolver): (our state dict, report).

    ``tokenizers_from_heads[task]`` (``"depth"``/``"insseg"``): take that frozen tokenizer from the head's
    ``vqvae`` copy (default: when present); otherwise ``model``'s own tokenizer (loaded from the config) is
    kept and the copy reported as dropped. ``strict``: ValueError, naming keys and shapes, unless every
    one of ours is filled, every key of the file understood and every shape fits; non-strict (``load_from``)
    returns what fits and reports the rest.
    """
    from ait_backbone.checkpoint import convert_state_dict
    from ait_decoder.positional import sine_positions_2d

    tasks = _task_layout(model)
    own = model.state_dict()
    report = ConversionReport(source=str(source), kind=f"original AiT model -> tasks {sorted(tasks)}")
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}

    def put(ours: str, tensor: torch.Tensor, origin: str) -> None:
        if ours not in own:
            report.unexpected.append(origin)
        elif _shape(tensor) != _shape(own[ours]):
            report.mismatched.append(f"{origin} {_shape(tensor)} -> {ours} {_shape(own[ours])}")
        else:
            out[ours] = tensor
            sources[ours] = origin
            report.mapped.append((origin, ours))

    # ---- sort the file's keys into parts
    backbone: dict[str, torch.Tensor] = {}
    transformer: dict[str, tuple[torch.Tensor, str]] = {}
    duplicates: list[str] = []
    vqvae: dict[str, dict[str, torch.Tensor]] = {}
    for key in sorted(state):
        if key.startswith("backbone."):
            backbone[key[len("backbone.") :]] = state[key]
        elif key.startswith("transformer."):
            transformer[key[len("transformer.") :]] = (state[key], key)
        else:
            head = next((task for task, prefix in _HEADS.items() if key.startswith(prefix)), None)
            rest = key[len(_HEADS[head]) :] if head else ""
            if head and rest.startswith("transformer."):
                duplicates.append(key)
            elif head and rest.startswith("vqvae."):
                vqvae.setdefault(head, {})[rest[len("vqvae.") :]] = state[key]
            elif head == "insseg" and rest == "loss_seq.weight":
                report.dropped.append((key, "cross-entropy class weights; ours come from the config's loss"))
            else:
                report.unexpected.append(key)
    for key in duplicates:  # a head's reference to the shared transformer: a copy, used only if needed
        rest = key.split(".transformer.", 1)[1]
        if rest in transformer:
            report.dropped.append((key, f"duplicate of transformer.{rest}"))
        else:
            transformer[rest] = (state[key], key)

    # ---- backbone: ait_backbone's SimMIM/original layout map
    if backbone:
        num_stages = len(model.backbone.preset.depths) if hasattr(model.backbone, "preset") else 4
        converted, names, dropped, _ = convert_state_dict(backbone, num_stages, layout="auto")
        report.dropped += [(f"backbone.{k}", "recomputed by the backbone for its windows") for k in dropped]
        for name, tensor in converted.items():
            put(f"backbone.{name}", tensor, f"backbone.{names[name]}")

    # ---- transformer
    fused: dict[str, list[tuple[int, int, torch.Tensor, str]]] = {}
    for rest, (tensor, origin) in sorted(transformer.items()):
        if rest == "voc_embed":
            put("decoder.token_embed.weight", tensor, origin)
        elif rest == "outp_bias":
            put("decoder.output_bias", tensor, origin)
        elif rest == "mask_embed":
            put("decoder.mask_embed", tensor.reshape(-1), origin)
        elif rest in ("det_embed", "dec_embed"):
            rows = int(tensor.shape[0]) if tensor.dim() == 3 else 0
            for task, length in tasks.items():
                ours = (
                    f"decoder.task_prompts.{task}"
                    if rest == "det_embed"
                    else f"decoder.task_positions.{task}"
                )
                task_id = TASK_IDS[task]
                if task_id >= rows or (rest == "dec_embed" and tensor.shape[1] < length):
                    report.mismatched.append(
                        f"{origin} {_shape(tensor)} -> {ours} {_shape(own[ours])} (task id {task_id}, "
                        f"{length} positions)"
                    )
                    continue
                piece = tensor[task_id] if rest == "det_embed" else tensor[task_id, :length]
                put(ours, piece, f"{origin}[{task_id}]" + ("" if rest == "det_embed" else f"[:{length}]"))
            unused = [TASK_IDS[t] for t in TASK_IDS if t not in tasks and TASK_IDS[t] < rows]
            unused += list(range(len(TASK_IDS), rows))
            what = "prompt" if rest == "det_embed" else "position"
            note = (
                f"{what} rows of task ids {sorted(unused)} (tasks this config does not use)" if unused else ""
            )
            if rest == "dec_embed" and tasks:
                longest = max(tasks.values())
                note += ("; " if note else "") + f"positions past each task's length (<= {longest} used)"
            if note:
                report.dropped.append((origin, note))
        elif rest == "enc_embed":
            _check_sine(tensor, origin, report, sine_positions_2d)
        else:
            target = _transformer_target(rest)
            if target is None:
                report.unexpected.append(origin)
            else:
                ours, slot, slots = target
                fused.setdefault(ours, []).append((slot, slots, tensor, origin))
    for ours, parts in fused.items():
        slots = parts[0][1]
        if sorted(slot for slot, *_ in parts) != list(range(slots)):
            report.unexpected += [origin for *_, origin in parts]  # an incomplete q/k/v set
            continue
        parts.sort(key=lambda part: part[0])
        tensor = torch.cat([part[2] for part in parts]) if slots > 1 else parts[0][2]
        put(ours, tensor, " + ".join(part[3] for part in parts))

    # ---- frozen tokenizers: the heads' vqvae copies, or the config's own
    use_heads = dict(tokenizers_from_heads or {})
    for task, part in sorted(vqvae.items()):
        prefix = f"{_HEADS[task]}vqvae."
        owner = _TOKENIZER_OWNER.get(task)
        if owner is None or not any(k.startswith(owner) for k in own):
            report.unexpected += [prefix + k for k in sorted(part)]
            continue
        if not use_heads.get(task, True):
            kind = _TOKENIZER_KIND[task]
            report.dropped += [
                (prefix + k, f"copy of the frozen tokenizer; model.{kind}_tokenizer.checkpoint is used")
                for k in sorted(part)
            ]
            continue
        preset_expected = getattr(_get_module(model, owner), "preset", None)
        try:
            tokenizer, tok_report = convert_original_vqvae(extract_original_vqvae(part) or part, prefix[:-1])
        except ValueError as error:
            report.mismatched.append(f"{prefix}*: {error}")
            continue
        if preset_expected is not None and tokenizer.preset != preset_expected:
            report.mismatched.append(
                f"{prefix}* is a {tokenizer.preset!r} tokenizer -> {owner[:-1]} is {preset_expected!r}"
            )
            continue
        for key, tensor in tokenizer.state_dict().items():
            origin = next((s for s, o in tok_report.mapped if o == key), None)
            if origin is None:
                out[owner + key] = tensor
                report.filled.append((owner + key, "true: the original's codebook needs no k-means stage"))
            else:
                put(owner + key, tensor, prefix + origin)

    # ---- ours that the file did not fill
    model_cfg = getattr(getattr(model, "cfg", None), "model", None)
    parallel = model_cfg is None or any(model_cfg.decoding_mode(t) == "parallel" for t in model_cfg.tasks)
    for key in own:
        if key in out:
            continue
        if key == "decoder.mask_embed" and not parallel:
            report.filled.append(
                (key, "AiT-P's input embedding, unused by this AiT config: initial value kept")
            )
            out[key] = own[key]
            continue
        owner_task = next((t for t, o in _TOKENIZER_OWNER.items() if key.startswith(o)), None)
        if owner_task is not None and not use_heads.get(owner_task, True):
            kind = _TOKENIZER_KIND[owner_task]
            report.filled.append((key, f"from model.{kind}_tokenizer.checkpoint"))
            out[key] = own[key]
        else:
            report.missing.append(key)
    if strict and not report.ok:
        raise ValueError(f"{source} does not fit this config: {report.problems()}")
    # non-strict (load_from, or a report printed before an error): what fits, ours filled as reported
    return out, report


def _get_module(model: torch.nn.Module, prefix: str) -> Any:
    module: Any = model
    for part in prefix.strip(".").split("."):
        module = getattr(module, part, None)
    return module


def _check_sine(tensor: torch.Tensor, origin: str, report: ConversionReport, sine) -> None:
    """The original's ``enc_embed`` buffer: the 2-D sine table our neck computes; dropped when equal."""
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        report.mismatched.append(f"{origin} {_shape(tensor)}: expected a (1, rows, cols, dim) sine table")
        return
    _, rows, cols, dim = (int(s) for s in tensor.shape)
    if tensor.device.type != "meta":
        expected = sine(rows, cols, dim).view(1, rows, cols, dim)
        if not torch.allclose(tensor.float(), expected, atol=1e-4):
            report.mismatched.append(
                f"{origin}: not the 2-D sine table our neck computes (the original's pos_enc='sine' only)"
            )
            return
    report.dropped.append((origin, f"fixed {rows}x{cols} sine positions, recomputed by the neck (equal)"))


# --------------------------------------------------------------------------------------------- entry points
def _build_for(cfg):
    from ait.model import build_task_solver

    build_cfg = copy.deepcopy(cfg)
    build_cfg.model.backbone_checkpoint = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        return build_task_solver(build_cfg)


def _tokenizer_policy(cfg) -> dict[str, bool]:
    """Take a tokenizer from the file's head copy unless the config names a checkpoint for it."""
    return {
        "depth": cfg.model.depth_tokenizer is None or cfg.model.depth_tokenizer.checkpoint is None,
        "insseg": cfg.model.mask_tokenizer is None or cfg.model.mask_tokenizer.checkpoint is None,
    }


def load_original_solver(
    path: str | os.PathLike,
    cfg=None,
    device: str | torch.device = "cpu",
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
):
    """(solver in eval mode, config) from an original task-solver file; the config is inferred from the
    file when not given. ValueError naming the keys and shapes when the file does not fit the config."""
    from ait.config import create_config

    if state is None:
        state = extract_original_solver(safe_torch_load(path))
        if state is None:
            raise ValueError(f"{path} is not an original AiT task-solver checkpoint")
    from ait.engine.checkpoint import check_finite_weights

    check_finite_weights(dict(state), path)
    if cfg is None:
        name, note = infer_original_config(state, str(path))
        (log or _warn)(f"{path}: {note}")
        cfg = create_config(name)
    policy = _tokenizer_policy(cfg)
    solver = _build_for(cfg)
    weights, _ = convert_original_solver(state, solver, str(path), tokenizers_from_heads=policy)
    solver.load_state_dict(weights, strict=True)
    if hasattr(solver, "cfg"):
        solver.cfg = cfg
    return solver.to(device).eval(), cfg


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def original_initial_weights(
    model: torch.nn.Module, path: str | os.PathLike, log: Callable[[str], None]
) -> dict[str, torch.Tensor] | None:
    """``load_from`` with an original file (e.g. ``ait_det_swinv2b_wodec.pth``): our names for the tensors
    that fit ``model``, None when the file is not an original AiT model. Like the original's non-strict
    mmcv load, tensors of other shapes (e.g. the detection model's smaller vocabulary) are skipped; the
    frozen tokenizers stay the config's."""
    state = read_original_solver(path)
    if state is None:
        return None
    weights, report = convert_original_solver(
        state, model, str(path), tokenizers_from_heads={"depth": False, "insseg": False}, strict=False
    )
    log(f"load_from (original release): {report.summary()}")
    for label, items in (
        ("shape mismatch, skipped", report.mismatched),
        ("not in this model", report.unexpected),
    ):
        if items:
            log(
                f"load_from {label}: "
                + "; ".join(items[:8])
                + (f"; ... ({len(items)})" if len(items) > 8 else "")
            )
    return weights


def convert_original(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    config: Any = None,
    cfg_options: list[str] | tuple[str, ...] = (),
    echo: Callable[[str], None] = print,
) -> ConversionReport:
    """`ait convert-original IN OUT [--config NAME]`: an original VQ-VAE -> our safetensors tokenizer, an
    original task-solver file -> our checkpoint format (``config``: a registered name, a Config object, or
    None to infer the original config from the file). Prints the report of every key; writes OUT only
    when everything fits (ValueError otherwise, nothing written)."""
    from ait.config import ConfigError, config_kind, create_config
    from ait.engine.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save

    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise ValueError(f"OUT must differ from IN ({in_path}): the original file is never overwritten")
    if in_path.is_file() and is_safetensors_file(in_path):
        raise ValueError(
            f"{in_path} is a safetensors file (already our format?), not an original release file"
        )
    content = safe_torch_load(in_path)
    if isinstance(content, Mapping) and content.get("format") == CHECKPOINT_FORMAT:
        raise ValueError(f"{in_path} is already an AiT task-solver checkpoint of ours: nothing to convert")

    vq_state = extract_original_vqvae(content)
    if vq_state is not None:
        from ait_tokenizer import save_tokenizer
        from ait_tokenizer.original import convert_original_vqvae as convert_vqvae

        tokenizer, report = convert_vqvae(vq_state, str(in_path))
        for line in report.lines():
            echo(line)
        save_tokenizer(tokenizer, out_path, extra={"converted_from": str(in_path)})
        echo(f"wrote {out_path} (tokenizer preset {tokenizer.preset!r})")
        return report

    state = extract_original_solver(content)
    if state is None:
        keys = list(content)[:6] if isinstance(content, Mapping) else type(content).__name__
        raise ValueError(
            f"{in_path} is neither an original AiT VQ-VAE ({{'weights': ...}}) nor an original task-solver "
            f"checkpoint (mmcv 'state_dict' with 'transformer.*'); it holds {keys}"
        )
    from ait.engine.checkpoint import check_finite_weights

    check_finite_weights(dict(state), in_path)
    note = None
    if config is None:
        config, note = infer_original_config(state, str(in_path))
    if isinstance(config, str):
        if config_kind(config) != "solver":
            raise ConfigError(
                f"{config!r} is a tokenizer config; a task-solver file needs a task-solver config"
            )
        cfg = create_config(config, list(cfg_options))
    else:  # a Config object (Python API)
        cfg = config
    policy = _tokenizer_policy(cfg)
    solver = _build_for(cfg)
    weights, report = convert_original_solver(
        state, solver, str(in_path), tokenizers_from_heads=policy, strict=False
    )
    report.kind = f"original AiT model -> config {cfg.name!r}"
    if note:
        report.notes.append(note)
    for line in report.lines():
        echo(line)
    if not report.ok:
        raise ValueError(
            f"{in_path} does not fit config {cfg.name!r} ({report.problems(limit=3)}); nothing written"
        )
    solver.load_state_dict(weights, strict=True)
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.to_json(),
            "config_name": cfg.name,
            "step": _meta_step(content),
            "model": {k: v.detach().cpu() for k, v in solver.state_dict().items()},
            "optimizer": None,
            "scheduler": None,
            "scaler": None,
            "data": None,
            "rng": None,
            "world_size": 1,
            "converted_from": str(in_path),
        },
        out_path,
    )
    echo(f"wrote {out_path} (config {cfg.name!r}; `ait eval {cfg.name} --checkpoint {out_path}`)")
    return report
