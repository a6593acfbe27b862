"""Does a trained solver's instance decoder look at the image? Teacher-forced accuracy per token role.

    python benchmarks/instance_probe.py RUN_DIR [--images 64] [--seed 0]

Feeds the held-out rooms' own instance sequences (the evaluation split of the run's config, built as in
training: objects in the config's order, padded with duplicates and noise boxes) to the solver with teacher
forcing and compares, for each role of an object's tokens (x1, y1, x2, y2, class, first mask token), the
solver's most likely token with the target against the best image-blind guess: the most frequent target
of that role. A solver that has learned instances beats the guess by far at every role (the model sees the
earlier tokens of the object, so x2 given x1 and y1, and the class given the whole box, are easy for one
that looks); one whose accuracy equals the guess predicts from the sequence alone, and its boxes land on
no object whatever the decoding. Only supervised positions count (real objects' box and mask tokens, every
object's class token, as the loss weighs them; "class_real" keeps the real objects' class tokens alone);
"within 2" counts a coordinate within two bins.
"""

from __future__ import annotations

import argparse
import json
import sys

ROLES = (("x1", 0), ("y1", 1), ("x2", 2), ("y2", 3), ("class", 4), ("class_real", 4), ("mask_1", 5))
COORDINATE_ROLES = (0, 1, 2, 3)


def role_accuracy(
    target_ids, predicted_ids, weights, per_object: int, noise_id: int | None = None
) -> dict[str, dict[str, float]]:
    """(B, T) targets, predictions and loss weights of instance sequences -> per role: the count of
    supervised positions, the accuracy, for coordinates the share within 2 bins, and the accuracy of always
    answering the role's most frequent target (the image-blind guess). "class" counts every object's class
    token, "class_real" (with `noise_id`) only those of real objects (target not the noise class)."""
    import torch

    if not (target_ids.shape == predicted_ids.shape == weights.shape) or target_ids.ndim != 2:
        raise ValueError(
            f"targets, predictions and weights must share one (B, T) shape, received {tuple(target_ids.shape)}, "
            f"{tuple(predicted_ids.shape)}, {tuple(weights.shape)}"
        )
    if target_ids.shape[1] % per_object:
        raise ValueError(
            f"sequence length {target_ids.shape[1]} is not a multiple of {per_object} tokens per object"
        )
    role_of = torch.arange(target_ids.shape[1], device=target_ids.device) % per_object
    result = {}
    for name, role in ROLES:
        if role >= per_object:
            continue
        chosen = (weights > 0) & (role_of == role)[None]
        if name == "class_real":
            if noise_id is None:
                continue
            chosen &= target_ids != noise_id
        target, predicted = target_ids[chosen], predicted_ids[chosen]
        if target.numel() == 0:
            continue
        most_frequent = target.mode().values
        row = {"positions": int(target.numel()), "accuracy": float((predicted == target).float().mean())}
        if role in COORDINATE_ROLES:
            row["within_2"] = float(((predicted - target).abs() <= 2).float().mean())
        row["image_blind_guess"] = float((target == most_frequent).float().mean())
        result[name] = row
    return result


def probe(run: str, images: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """Teacher-forced accuracy per role of the solver in `run` (a run folder or checkpoint) on the first
    `images` rooms of its evaluation split."""
    import torch

    import ait
    from ait.data import build_eval_dataset

    solver = ait.load(run, device="cpu")
    model = solver.model.eval()
    head = model.instance_head
    if head is None:
        raise SystemExit(f"instance_probe: error: {run} has no instance task (tasks {solver.tasks})")
    dataset = build_eval_dataset(solver.config, head.task)
    samples = [dataset[index] for index in range(min(images, len(dataset)))]
    batch = {key: [sample[key] for sample in samples] for key in samples[0]}
    batch["image"] = torch.stack(batch["image"])
    with torch.no_grad():
        targets = head.build_targets(batch, generator=torch.Generator().manual_seed(seed))
        memory = model.encode_images(batch["image"])
        length = targets["input_ids"].shape[1]
        logits = model.teacher_forced_logits(memory, targets["input_ids"], head.task, length)
    return role_accuracy(
        targets["target_ids"], logits.argmax(-1), targets["weights"], head.per_object, head.vocab.noise_id
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder or checkpoint of a solver with an instance task")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sequences' padding and order")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.images <= 0:
        parser.error("--images must be positive")
    result = probe(args.run, args.images, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| token | positions | accuracy | within 2 | image-blind guess |")
    print("|---|---:|---:|---:|---:|")
    for name, row in result.items():
        within = f"{100 * row['within_2']:.1f} %" if "within_2" in row else ""
        print(
            f"| {name} | {row['positions']} | {100 * row['accuracy']:.1f} % | {within} "
            f"| {100 * row['image_blind_guess']:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
