"""The original release's task-solver files: recognised by content, mapped key by key, same logits.

The reference modules below restate the original's ``ARTransformer`` (``ait/code/model/transformer.py``:
``Attention`` with separate ``wq/wk/wv``, pre-norm ``EncoderBlock``/``DecoderBlock`` where ``norm2``
normalises both the queries and the image memory, the ``input_proj``/``stem_ln``/``encout_ln``/``proj``/
``proj_ln``/``proj_mlp``/``proj_mlp_ln`` neck, the ``det_embed``/``dec_embed``/``voc_embed``/``outp_bias``/
``mask_embed`` tables, the 'sine' ``enc_embed`` buffer) and the ``AiT`` container (``backbone``,
``transformer``, ``<task>_head`` modules that each hold the same transformer and a ``vqvae``), with the
original's attribute names, so their ``state_dict`` keys are the original's. The forward is the original's
training branch: ``[det_embed[task], voc_embed[input]] + dec_embed[task, :M]``, a causal mask, logits tied
to ``voc_embed`` plus ``outp_bias``. The backbone is our SwinV2 module saved under the original's names
(stage merging at the end of a stage, ``rpe_mlp``, ``norm3``); its own mapping is ait_backbone's, tested there.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ait.cli import main
from ait.config import create_config
from ait.config.schema import Config, ModelConfig, TokenizerRef
from ait.engine.inference import load_solver
from ait.engine.trainer import load_initial_weights
from ait.model import build_task_solver
from ait.original import (
    convert_original,
    convert_original_solver,
    infer_original_config,
    load_original_solver,
)
from ait_tokenizer import load_tokenizer

TASK_IDS = {"det": 0, "insseg": 1, "depth": 2}
SIZE = 64


# ------------------------------------------------------------------------------ the original, restated
class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q, k, v, mask=None):
        batch, n, dim = q.shape
        heads = self.num_heads

        def split(t, proj):
            return proj(t).reshape(batch, t.shape[1], heads, dim // heads).transpose(1, 2)

        q, k, v = split(q, self.wq), split(k, self.wk), split(v, self.wv)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn.masked_fill(mask, float("-inf"))
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, n, dim)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        n = self.norm1(x)
        x = x + self.attn(n, n, n)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.crossattn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x, z, mask):
        n = self.norm1(x)
        x = x + self.attn(n, n, n, mask)
        n, nz = self.norm2(x), self.norm2(z)
        x = x + self.crossattn(n, nz, nz)
        return x + self.mlp(self.norm3(x))


class Sequential(nn.Module):
    def __init__(self, *blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def sine_table(rows, cols, d_model, dtype=torch.float32):
    half = d_model // 2
    dim_t = 10000.0 ** (2 * (torch.arange(half, dtype=dtype) // 2) / half)
    pos_x = torch.arange(cols, dtype=dtype)[:, None] / dim_t
    pos_y = torch.arange(rows, dtype=dtype)[:, None] / dim_t
    pos_x = (
        torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), -1).view(1, cols, -1).expand(rows, cols, -1)
    )
    pos_y = (
        torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), -1).view(rows, 1, -1).expand(rows, cols, -1)
    )
    return torch.cat((pos_y, pos_x), dim=-1).view(1, rows, cols, -1)


class ARTransformer(nn.Module):
    def __init__(
        self,
        in_chans,
        d_model,
        nhead,
        enc_layers,
        dec_layers,
        ff,
        num_vocal,
        dec_length,
        n_rows,
        n_cols,
        parallel,
    ):
        super().__init__()
        self.register_buffer("enc_embed", sine_table(n_rows, n_cols, d_model))
        if parallel:
            self.mask_embed = nn.Parameter(torch.empty(1, 1, d_model))
        self.parallel = parallel
        self.det_embed = nn.Parameter(torch.empty(4, 1, d_model))
        self.voc_embed = nn.Parameter(torch.empty(num_vocal, d_model))
        self.dec_embed = nn.Parameter(torch.empty(4, dec_length, d_model))
        self.input_proj = nn.Linear(in_chans, d_model)
        self.encoder = Sequential(*[EncoderBlock(d_model, nhead, ff) for _ in range(enc_layers)])
        self.decoder = Sequential(*[DecoderBlock(d_model, nhead, ff) for _ in range(dec_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.outp_bias = nn.Parameter(torch.empty(num_vocal))
        self.stem_ln = nn.LayerNorm(d_model)
        self.encout_ln = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_ln = nn.LayerNorm(d_model)
        self.proj_mlp = Mlp(d_model, ff)
        self.proj_mlp_ln = nn.LayerNorm(d_model)

    def forward(self, src, input_seq, task_id):
        """The original's training branch (eval: no dropout): logits (B, M, V), M = input length + 1."""
        height, width = src.shape[-2:]
        src = self.stem_ln(self.input_proj(src.flatten(2).transpose(1, 2)))
        enc_embed = self.enc_embed[:, :height, :width, :].flatten(1, 2)
        z = src + enc_embed
        for block in self.encoder.blocks:
            z = block(z)
        z = self.encout_ln(z)
        z = self.proj_ln(self.proj(z)) + enc_embed
        z = z + self.proj_mlp(self.proj_mlp_ln(z))
        batch, m = input_seq.shape[0], input_seq.shape[1] + 1
        task = torch.full((batch,), task_id, dtype=torch.long)
        pos = self.dec_embed[task, :m, :]
        embeds = self.voc_embed[input_seq]
        if self.parallel:
            embeds = self.mask_embed.expand_as(embeds)
        x = torch.cat([self.det_embed[task, :, :], embeds], dim=1) + pos
        mask = torch.triu(torch.ones(m, m), diagonal=1).bool()
        for block in self.decoder.blocks:
            x = block(x, z, mask)
        return self.norm(x) @ self.voc_embed.transpose(0, 1) + self.outp_bias


class ResBlock(nn.Module):
    def __init__(self, chan):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 1),
        )


class VectorQuantizerEMA(nn.Module):
    def __init__(self, num, dim):
        super().__init__()
        self.register_buffer("_embedding", torch.randn(num, dim))
        self.register_buffer("_ema_cluster_size", torch.zeros(num))
        self.register_buffer("_ema_w", torch.randn(num, dim))


class VQVAE(nn.Module):
    """Parameters of the original VQVAE (numerics: ait-tokenizer's test_original.py)."""

    def __init__(self, downsample_ratio, config_hidden_dim):
        super().__init__()
        layer_num = int(math.log2(downsample_ratio) - 1)
        dim = hidden = config_hidden_dim // (downsample_ratio // 2)
        enc = [nn.Conv2d(1, dim, 4, 2, 1), nn.ReLU()]
        for _ in range(layer_num):
            enc += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.ReLU()]
            dim *= 2
        self.encoder = nn.Sequential(*enc, ResBlock(dim), ResBlock(dim), nn.Conv2d(dim, 512, 1))
        dim = hidden * downsample_ratio // 2
        dec = [
            nn.Conv2d(512, dim, 1),
            nn.ReLU(),
            ResBlock(dim),
            ResBlock(dim),
            nn.ConvTranspose2d(dim, dim, 4, 2, 1),
            nn.ReLU(),
        ]
        for _ in range(layer_num):
            dec += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1), nn.ReLU()]
            dim //= 2
        self.decoder = nn.Sequential(*dec, nn.Conv2d(dim, 1, 1))
        self._vq_vae = VectorQuantizerEMA(128, 512)


class Head(nn.Module):
    def __init__(self, transformer, vqvae=None, num_vocal=None):
        super().__init__()
        self.transformer = transformer  # the original's heads keep the shared transformer: duplicate keys
        if vqvae is not None:
            self.vqvae = vqvae
        if num_vocal is not None:  # InsSegHead's nn.CrossEntropyLoss(weight=class_weight)
            self.loss_seq = nn.CrossEntropyLoss(weight=torch.ones(num_vocal))


class AiT(nn.Module):
    def __init__(self, backbone, transformer, tasks, num_vocal):
        super().__init__()
        self.backbone = backbone
        self.transformer = transformer
        if "det" in tasks:
            self.det_head = Head(transformer)
        if "insseg" in tasks:
            self.insseg_head = Head(transformer, VQVAE(16, 128), num_vocal)
        if "depth" in tasks:
            self.depth_head = Head(transformer, VQVAE(32, 256))


def original_backbone_names(state, out_norm):
    """Our (timm) SwinV2 names -> the original's: stage i's merging sits at the end of stage i-1,
    the position-bias MLP is `rpe_mlp`, the output norm of the last stage `norm3`."""
    renamed = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        if parts[0] == "norm":
            parts[0] = out_norm
        parts = ["rpe_mlp" if part == "cpb_mlp" else part for part in parts]
        renamed["backbone." + ".".join(parts)] = tensor
    return renamed


def original_state_dict(reference: AiT) -> dict:
    """The reference's state dict with the backbone under the original's names (+ a recomputed buffer)."""
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("backbone.")}
    state.update(original_backbone_names(reference.backbone.state_dict(), "norm3"))
    state["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    return state


# ------------------------------------------------------------------------------ helpers
def tiny_config(tasks, parallel=False, **overrides) -> Config:
    model = ModelConfig(
        backbone="swinv2-tiny-cpu",
        backbone_overrides={"img_size": SIZE},
        backbone_drop_path=0.0,
        d_model=32,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=48,
        dropout=0.0,
        drop_path=0.0,
        num_bins=SIZE,
        num_classes=5,
        reserved_tokens=3,
        tasks=tuple(tasks),
        parallel=parallel,
        max_objects=2,
        canvas=SIZE,
        depth_size=(SIZE, SIZE),
        depth_tokenizer=TokenizerRef("depth-paper") if "depth" in tasks else None,
        mask_tokenizer=TokenizerRef("mask-paper") if "insseg" in tasks else None,
    )
    return Config(name="tiny_original", model=dataclasses.replace(model, **overrides))


def build(cfg, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_task_solver(cfg)


def make_reference(cfg: Config, seed: int = 1) -> AiT:
    """The original model for `cfg`'s sizes with random weights (float32, as the releases are)."""
    ours = build(cfg, seed)
    model = cfg.model
    backbone = copy.deepcopy(ours.backbone)
    transformer = ARTransformer(
        backbone.out_channels,
        model.d_model,
        model.nhead,
        model.num_encoder_layers,
        model.num_decoder_layers,
        model.dim_feedforward,
        ours.vocab.size,
        dec_length=100,
        n_rows=2,
        n_cols=2,
        parallel=model.parallel,
    )
    reference = AiT(backbone, transformer, model.tasks, ours.vocab.size)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in reference.named_parameters():
            if not name.startswith("backbone."):
                tensor.copy_(
                    torch.randn(tensor.shape, generator=gen)
                    * (0.3 if "norm" in name or "ln" in name else 0.1)
                )
                if name.endswith(
                    ("norm.weight", "ln.weight", "norm1.weight", "norm2.weight", "norm3.weight")
                ):
                    tensor.add_(1.0)
        for tensor in backbone.parameters():
            tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.02)
    return reference.eval()


def save_mmcv(state, path):
    """An mmcv runner file: meta, state_dict, optimizer (only state_dict is read)."""
    torch.save(
        {
            "meta": {"iter": 7, "mmcv_version": "1.7.0", "CLASSES": ("person",)},
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    return path


def logits_pair(solver, reference, cfg, task, images, seed=0):
    """(ours, original) teacher-forced logits in float64 for random input ids."""
    solver, reference = solver.double().eval(), copy.deepcopy(reference).double().eval()
    # The original builds its sine table in float32; computed in float64 here (as our neck does in a
    # float64 model) so that float32 rounding of a fixed table (~1e-8) does not hide a mapping error.
    table = reference.transformer.enc_embed
    reference.transformer.enc_embed = sine_table(
        table.shape[1], table.shape[2], table.shape[3], torch.float64
    )
    length = solver.decoder.config.tasks[task]
    ids = torch.randint(
        0, solver.vocab.size, (images.shape[0], length), generator=torch.Generator().manual_seed(seed)
    )
    images = images.double()
    with torch.no_grad():
        memory = solver.decoder.encode(solver.backbone(images))
        if cfg.model.parallel:
            ours = solver.decoder(memory, None, task, parallel=True, length=length)
        else:
            ours = solver.decoder(memory, ids, task)
        theirs = reference.transformer(reference.backbone(images), ids[:, :-1], TASK_IDS[task])
    return ours, theirs


# ------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize(
    ("tasks", "parallel"),
    [(("depth",), False), (("depth",), True), (("depth", "insseg"), False), (("det",), False)],
    ids=["depth-AiT", "depth-AiT-P", "joint", "det"],
)
def test_teacher_forced_logits_equal_the_original_in_float64(tmp_path, tasks, parallel):
    cfg = tiny_config(tasks, parallel=parallel)
    reference = make_reference(cfg)
    path = save_mmcv(original_state_dict(reference), tmp_path / "iter_7.pth")

    solver, _ = load_solver(path, cfg)  # `ait eval CONFIG --checkpoint` path; recognised by content
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    for task in cfg.model.tasks:
        ours, theirs = logits_pair(solver, reference, cfg, task, images)
        assert ours.shape == theirs.shape == (2, solver.decoder.config.tasks[task], solver.vocab.size)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
        assert theirs.std() > 0.1  # the comparison sees real numbers, not a constant
    # the frozen tokenizers are the heads' vqvae copies
    for task, ours_head, theirs_head in (
        ("depth", "depth_head", "depth_head"),
        ("insseg", "instance_head", "insseg_head"),
    ):
        if task in tasks:
            torch.testing.assert_close(
                getattr(solver, ours_head).tokenizer.codebook.float(),
                getattr(reference, theirs_head).vqvae._vq_vae._embedding,
                rtol=0,
                atol=0,
            )


def test_depth_prediction_runs_from_an_original_file_and_tokenizers_can_come_from_the_config(tmp_path):
    cfg = tiny_config(("depth",))
    reference = make_reference(cfg)
    path = save_mmcv(original_state_dict(reference), tmp_path / "depth.pth")
    # a separately released tokenizer named by the config wins over the head's copy
    other = VQVAE(32, 256)
    torch.save({"weights": other.state_dict()}, tmp_path / "vqvae_depth.pt")
    cfg.model.depth_tokenizer = TokenizerRef("depth-paper", str(tmp_path / "vqvae_depth.pt"))
    solver, _ = load_original_solver(path, cfg)
    assert torch.equal(solver.depth_head.tokenizer.codebook, other._vq_vae._embedding)
    depth = solver.predict_depth(torch.rand(1, 3, SIZE, SIZE))
    assert depth.shape == (1, 1, SIZE, SIZE) and torch.isfinite(depth).all()


def test_load_from_an_original_detection_model(tmp_path):
    det_cfg = tiny_config(("det",), reserved_tokens=0)
    reference = make_reference(det_cfg)
    path = save_mmcv(original_state_dict(reference), tmp_path / "ait_det_swinv2b_wodec.pth")

    model = build(tiny_config(("insseg",)), seed=5)  # vocabulary 3 ids larger, as insseg vs det
    before = {k: v.clone() for k, v in model.state_dict().items()}
    messages = []
    load_initial_weights(model, str(path), messages.append)
    state = model.state_dict()
    transformer = reference.transformer
    assert torch.equal(state["decoder.task_prompts.insseg"], transformer.det_embed[1])  # task id 1's row
    assert torch.equal(state["decoder.task_positions.insseg"], transformer.dec_embed[1, :42])
    qkv = torch.cat(
        [
            transformer.decoder.blocks[0].attn.wq.weight,
            transformer.decoder.blocks[0].attn.wk.weight,
            transformer.decoder.blocks[0].attn.wv.weight,
        ]
    )
    assert torch.equal(state["decoder.blocks.0.self_attn.qkv.weight"], qkv)
    assert torch.equal(state["backbone.patch_embed.proj.weight"], reference.backbone.patch_embed.proj.weight)
    # as the original's non-strict mmcv load: another vocabulary size is skipped, the tokenizer kept
    assert torch.equal(state["decoder.token_embed.weight"], before["decoder.token_embed.weight"])
    assert torch.equal(
        state["instance_head.tokenizer.quantizer.embed"], before["instance_head.tokenizer.quantizer.embed"]
    )
    assert any("shape mismatch, skipped" in m and "voc_embed" in m for m in messages)


# ------------------------------------------------------------------------------ paper sizes: key sets
PAPER_CONFIGS = [
    "swinv2b_480reso_depthonly",
    "swinv2b_480reso_parallel_depthonly",
    "swinv2l_480reso_depthonly",
    "swinv2l_480reso_parallel_depthonly",
    "swinv2b_480reso_depthonly_wosoft",
    "swinv2b_640reso_detonly",
    "swinv2b_640reso_inssegonly",
    "swinv2b_640reso_inssegonly_wosoft",
    "swinv2b_640reso_joint",
]


def paper_original_state(cfg, ours) -> dict:
    """The original model's state dict for a paper config, on the meta device (shapes only)."""
    model = cfg.model
    instance = "insseg" in model.tasks
    num_vocal = 2001 + 80 + 2 + 128 + 128 + (128 if instance else 0)
    grid = 15 if tuple(model.tasks) == ("depth",) else 20  # n_rows/n_cols: 480 px depth or 640 px COCO
    with torch.device("meta"):
        transformer = ARTransformer(
            ours.backbone.out_channels, 256, 8, 6, 6, 1024, num_vocal, 2100, grid, grid, model.parallel
        )
        reference = AiT(nn.Identity(), transformer, model.tasks, num_vocal)
    state = dict(reference.state_dict())
    state.update(original_backbone_names(ours.backbone.state_dict(), "norm3"))
    return state


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_consume_every_original_key_and_fill_every_one_of_ours(name):
    cfg = create_config(name)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = build_task_solver(cfg)
    state = paper_original_state(cfg, ours)
    inferred, _ = infer_original_config(state)
    assert inferred == name.removesuffix("_wosoft")

    weights, report = convert_original_solver(state, ours, name)  # strict: raises on any misfit
    assert report.ok
    consumed = set()
    for origin, _ in report.mapped:
        consumed.update(part.split("[")[0] for part in origin.split(" + "))
    consumed.update(origin for origin, _ in report.dropped)
    assert consumed == set(state)  # every original key consumed (mapped or dropped with a reason)
    own = ours.state_dict()
    assert set(weights) == set(own)  # every one of ours filled
    for key, tensor in weights.items():
        assert tuple(tensor.shape) == tuple(own[key].shape), key
    dropped = dict(report.dropped)
    assert all(
        ".transformer." in k
        for k in dropped
        if k.startswith(("det_head", "insseg_head", "depth_head")) and "loss_seq" not in k
    )


# ------------------------------------------------------------------------------ convert-original
def test_convert_original_writes_our_formats_with_a_full_report(tmp_path, capsys):
    cfg = tiny_config(("depth", "insseg"))
    reference = make_reference(cfg)
    path = save_mmcv(original_state_dict(reference), tmp_path / "orig.pth")

    # a VQ-VAE release through the command line -> our safetensors tokenizer
    torch.save({"weights": reference.depth_head.vqvae.state_dict()}, tmp_path / "vqvae_depth.pt")
    assert (
        main(
            ["convert-original", str(tmp_path / "vqvae_depth.pt"), str(tmp_path / "vqvae_depth.safetensors")]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "mapped     _vq_vae._embedding -> quantizer.embed" in printed
    assert "filled     quantizer.initialised" in printed
    assert load_tokenizer(tmp_path / "vqvae_depth.safetensors").preset == "depth-paper"

    # a task-solver release -> our checkpoint format (a config object: the tiny one is not registered)
    out = tmp_path / "ours.pt"
    report = convert_original(path, out, cfg, echo=lambda line: None)
    assert report.ok and out.is_file()
    mapped = dict((ours, origin) for origin, ours in report.mapped)
    assert mapped["decoder.blocks.1.cross_attn.kv.weight"] == (
        "transformer.decoder.blocks.1.crossattn.wk.weight + transformer.decoder.blocks.1.crossattn.wv.weight"
    )
    assert mapped["decoder.task_prompts.depth"] == "transformer.det_embed[2]"
    assert (
        "insseg_head.loss_seq.weight",
        "cross-entropy class weights; ours come from the config's loss",
    ) in report.dropped
    assert any(k == "depth_head.transformer.norm.weight" for k, _ in report.dropped)
    converted, _ = load_solver(out, cfg)
    direct, _ = load_solver(path, cfg)
    for (name, a), (_, b) in zip(converted.state_dict().items(), direct.state_dict().items()):
        if name != "decoder.mask_embed":  # AiT-P's embedding, unused by AiT: each build's initial value
            assert torch.equal(a, b), name
    images = torch.rand(1, 3, SIZE, SIZE)
    ours, theirs = logits_pair(converted, reference, cfg, "insseg", images)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_convert_original_refuses_another_config_and_writes_nothing(tmp_path, capsys):
    cfg = tiny_config(("depth",))
    reference = make_reference(cfg)
    path = save_mmcv(original_state_dict(reference), tmp_path / "orig.pth")
    out = tmp_path / "ours.pt"
    assert main(["convert-original", str(path), str(out), "--config", "cpu_depth_tiny"]) == 2
    captured = capsys.readouterr()
    assert "mismatched" in captured.out  # the report names keys and shapes
    assert captured.err.startswith("ait: error: ") and captured.err.count("\n") == 1
    assert "nothing written" in captured.err
    assert not out.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bad_files_are_one_line_errors_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"transformer.x": torch.zeros(1)}, "meta": _Payload(marker)}, evil)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    for path, message in (
        (evil, "refused to load"),
        (junk, "cannot read"),
        (other, "neither an original AiT VQ-VAE"),
        (legacy, "legacy.pth"),
    ):
        out = tmp_path / f"{path.stem}.out"
        assert main(["convert-original", str(path), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ait: error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists()
    with pytest.raises(ValueError, match="refused to load"):
        load_solver(evil)
    assert not marker.exists()


def test_the_original_vae_cfg_pretrained_alias_takes_an_original_vqvae_file(tmp_path):
    torch.manual_seed(4)
    vqvae = VQVAE(16, 128)
    torch.save({"weights": vqvae.state_dict()}, tmp_path / "vqvae_insseg.pt")
    cfg = create_config(
        "cpu_insseg_tiny",
        [
            "model.mask_tokenizer.preset=mask-paper",
            f"model.task_heads.insseg.vae_cfg.pretrained={tmp_path / 'vqvae_insseg.pt'}",
        ],
    )
    solver = build(cfg)
    assert solver.instance_head.tokenizer.preset == "mask-paper"
    assert torch.equal(solver.instance_head.tokenizer.codebook, vqvae._vq_vae._embedding)
    cfg = create_config(
        "cpu_depth_tiny", [f"model.task_heads.depth.vae_cfg.pretrained={tmp_path / 'vqvae_insseg.pt'}"]
    )
    with pytest.raises(ValueError, match=r"vqvae_insseg\.pt holds an original VQ-VAE of preset 'mask-paper'"):
        build(cfg)


def test_a_file_whose_config_cannot_be_inferred_asks_for_one(tmp_path):
    state = original_state_dict(make_reference(tiny_config(("depth",))))
    state["backbone.patch_embed.proj.weight"] = torch.zeros(96, 3, 4, 4)  # no original config is this wide
    path = save_mmcv(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"odd\.pth: no original config has tasks \['depth'\].*--config"):
        load_solver(path)


def test_load_from_a_backbone_only_original_file_and_ours_are_told_apart(tmp_path):
    reference = make_reference(tiny_config(("det",)))
    backbone_only = {k: v for k, v in original_state_dict(reference).items() if k.startswith("backbone.")}
    path = save_mmcv(backbone_only, tmp_path / "wodec.pth")
    model = build(tiny_config(("depth",)), seed=6)
    load_initial_weights(model, str(path), lambda message: None)
    assert torch.equal(model.state_dict()["backbone.norm.weight"], reference.backbone.norm.weight)
    # a bare state dict of ours (timm names, our decoder) is not mistaken for the original's
    ours = build(tiny_config(("depth",)), seed=7)
    torch.save(ours.state_dict(), tmp_path / "ours_bare.pt")
    load_initial_weights(model, str(tmp_path / "ours_bare.pt"), lambda message: None)
    for key, tensor in ours.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_ait_eval_takes_an_original_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = ["model.depth_tokenizer.preset=depth-paper", "data.synthetic_val_length=2", "data.eval_batch=2"]
    cfg = create_config("cpu_depth_tiny", options)
    path = save_mmcv(original_state_dict(make_reference(cfg)), tmp_path / "original_depth.pth")
    argv = ["eval", "cpu_depth_tiny", "--checkpoint", str(path), "--device", "cpu", "--out", "m.json"]
    assert main([*argv, "--cfg-options", *options]) == 0, capsys.readouterr().err
    assert "rmse" in (tmp_path / "m.json").read_text()


def test_ait_predict_and_the_api_take_an_original_checkpoint_with_a_named_config(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    import ait

    options = ["model.depth_tokenizer.preset=depth-paper", "model.top_p=0.5"]
    cfg = create_config("cpu_depth_tiny", options)
    path = save_mmcv(original_state_dict(make_reference(cfg)), tmp_path / "original_depth.pth")
    image = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    argv = ["predict", str(image), "--checkpoint", str(path), "--config", "cpu_depth_tiny", "--out", str(out)]
    assert main([*argv, "--cfg-options", *options]) == 0, capsys.readouterr().err
    solver = ait.load(path, device="cpu", config="cpu_depth_tiny", cfg_options=options)
    assert solver.config.model.top_p == 0.5
    np.testing.assert_array_equal(np.load(out / "room_depth.npy"), solver.predict(image).depth)
