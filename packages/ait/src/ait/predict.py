"""`ait predict`: a solver over files, folders and globs, streamed in batches, written as data.

Per image (mirroring the inputs' folders under --out, so equal file names never collide): NAME_depth.npy
(float32 metres), NAME_depth.png (uint16 millimetres), NAME_depth_color.png, NAME_instances.png (overlay
with class names and scores). Per run: coco_results.json (COCO results: image_id, category_id, bbox,
score, segmentation RLE, plus file_name) with coco_images.json (the images and categories, so that
`COCO("coco_images.json").loadRes("coco_results.json")` works without ground truth), and ait_predict.json
(what this folder's runs wrote). Image ids are the file names' numbers when every name is one (COCO's
000000397133.jpg -> 397133, so results evaluate against COCO's annotations), else 1, 2, ... in order.

Nothing is predicted before every input is found and checked by its header; no file a run writes may
replace an input, a checkpoint or any file ait predict did not write there before.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ait.api import Solver, output_files

__all__ = [
    "IMAGE_SUFFIXES",
    "PlannedImage",
    "collect_images",
    "plan_outputs",
    "predict_planned",
    "predict_to_folder",
]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm"}
)
RESULTS_FILE = "coco_results.json"
IMAGES_FILE = "coco_images.json"
MANIFEST_FILE = "ait_predict.json"
_GLOB_CHARS = frozenset("*?[")


@dataclass
class PlannedImage:
    path: Path
    out_dir: Path
    name: str
    image_id: int
    width: int
    height: int
    file_name: str  # the input's path relative to the inputs' common folder (COCO "file_name")


def _warn(message: str) -> None:
    print(f"ait: warning: {message}", file=sys.stderr, flush=True)


def collect_images(
    inputs: list[str], exclude: Path | None = None, warn: Callable[[str], None] = _warn
) -> list[Path]:
    """Image files of `inputs` (files, folders searched recursively, glob patterns), in order, each once.

    A folder contributes its files with image suffixes, less hidden files and what ait predict wrote into
    `exclude` (the output folder: its predictions are never taken for photos); a named file or a glob match
    is taken whatever its suffix, and whether it is an image is decided by its content later. A missing
    file, a glob matching nothing or a folder without images is a FileNotFoundError naming it.
    """
    out = exclude.resolve() if exclude is not None else None
    ours = _previous_outputs(exclude) if exclude is not None else set()
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            found.append(path)

    def add_folder(folder: Path) -> None:
        # an output folder inside this one is left out whole; one that is this folder, file by file (`ours`)
        nested_out = out if out is not None and folder.resolve() in out.parents else None
        images = []
        for path in sorted(folder.rglob("*")):
            resolved = path.resolve()
            if (
                path.is_file()
                and path.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in path.relative_to(folder).parts)
                and resolved not in ours
                and not (nested_out is not None and nested_out in resolved.parents)
            ):
                images.append(path)
        if not images:
            raise FileNotFoundError(
                f"no images in folder {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files)"
            )
        for image in images:
            add(image)

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            add_folder(path)
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches {text!r}")
            for match in matches:
                (add_folder if Path(match).is_dir() else add)(Path(match))
        else:
            raise FileNotFoundError(f"image not found: {path}")
    return found


def _probe(path: Path) -> tuple[int, int] | str:
    """(width, height) from the header, or why the file is not an image (nothing is decoded here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"not an image ({type(error).__name__}: {' '.join(str(error).split())})"


def _image_ids(paths: list[Path]) -> list[int]:
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def plan_outputs(
    paths: list[Path], out_dir: Path, warn: Callable[[str], None] = _warn
) -> tuple[list[PlannedImage], list[Path]]:
    """Checked images with their output folder, name and image id; the files that are not images are
    skipped with a warning naming them. ValueError for an image too small or too large (before anything
    is predicted), FileNotFoundError when no image is left."""
    from ait.engine.inference import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

    images, sizes, skipped = [], [], []
    for path in paths:
        probed = _probe(path)
        if isinstance(probed, str):
            warn(f"skipping {path}: {probed}")
            skipped.append(path)
            continue
        width, height = probed
        if min(width, height) < MIN_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"image {path} is {width}x{height} pixels; ait predict takes images of at least "
                f"{MIN_IMAGE_SIDE} pixels a side and at most {MAX_IMAGE_PIXELS // 2**20} megapixels: resize it "
                "or leave it out (nothing was written)"
            )
        images.append(path)
        sizes.append((width, height))
    if not images:
        named = ", ".join(str(p) for p in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise FileNotFoundError(f"no image to predict: none of the inputs is an image ({named})")
    absolute = [p.resolve() for p in images]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    relative = [p.relative_to(root) for p in absolute]
    # a name is the file's stem, or stem_suffix where two files of one folder share a stem (a.jpg, a.png)
    stems: dict[tuple[Path, str], int] = {}
    for rel in relative:
        stems[(rel.parent, rel.stem)] = stems.get((rel.parent, rel.stem), 0) + 1
    ids = _image_ids(images)
    planned = []
    taken: set[tuple[Path, str]] = set()
    for path, rel, (width, height), image_id in zip(images, relative, sizes, ids, strict=True):
        name = rel.stem if stems[(rel.parent, rel.stem)] == 1 else f"{rel.stem}_{rel.suffix.lstrip('.')}"
        base, count = name, 1
        while (rel.parent, name) in taken:  # a.jpg, a.png and a_jpg.png in one folder
            count += 1
            name = f"{base}_{count}"
        taken.add((rel.parent, name))
        planned.append(
            PlannedImage(
                path=path,
                out_dir=out_dir / rel.parent,
                name=name,
                image_id=image_id,
                width=width,
                height=height,
                file_name=rel.as_posix(),
            )
        )
    return planned, skipped


def _previous_outputs(out_dir: Path) -> set[Path]:
    manifest = out_dir / MANIFEST_FILE
    if not manifest.is_file():
        return set()
    try:
        written = json.loads(manifest.read_text(encoding="utf-8")).get("written", [])
    except (ValueError, AttributeError):
        return set()
    return {(out_dir / rel).resolve() for rel in written if isinstance(rel, str)}


def check_outputs_are_free(
    planned: list[PlannedImage], solver: Solver, out_dir: Path, protected: list[Path]
) -> list[Path]:
    """Every file this run will write; ValueError naming the first that would replace an input, a protected
    file (the checkpoint) or a file that ait predict did not write there before."""
    depth = "depth" in solver.tasks
    instances = any(task in solver.tasks for task in ("insseg", "det"))
    targets = [
        target
        for item in planned
        for target in output_files(item.out_dir, item.name, depth=depth, instances=instances).values()
    ]
    if instances:
        targets += [out_dir / RESULTS_FILE, out_dir / IMAGES_FILE]
    targets.append(out_dir / MANIFEST_FILE)
    inputs = {item.path.resolve() for item in planned} | {p.resolve() for p in protected}
    ours = _previous_outputs(out_dir) | {(out_dir / MANIFEST_FILE).resolve()}
    for target in targets:
        resolved = target.resolve()
        if resolved in inputs:
            raise ValueError(
                f"--out {out_dir}: writing {target} would replace an input of this run: choose another --out "
                "(nothing was written)"
            )
        if target.exists() and resolved not in ours:
            raise ValueError(
                f"--out {out_dir}: {target} already exists and was not written by ait predict: choose another "
                "--out (nothing was written)"
            )
    return targets


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def predict_to_folder(
    solver: Solver,
    inputs: list[str],
    out_dir: str | os.PathLike,
    batch_size: int = 1,
    protected: list[Path] = (),
    warn: Callable[[str], None] = _warn,
    progress: bool | None = None,
) -> dict:
    """Predict every image of `inputs` (files, folders, globs) into `out_dir`; see `predict_planned`."""
    out = Path(out_dir)
    planned, skipped = plan_outputs(collect_images(inputs, exclude=out, warn=warn), out, warn=warn)
    return predict_planned(solver, planned, out, batch_size, protected, warn, progress, skipped=skipped)


def predict_planned(
    solver: Solver,
    planned: list[PlannedImage],
    out_dir: str | os.PathLike,
    batch_size: int = 1,
    protected: list[Path] = (),
    warn: Callable[[str], None] = _warn,
    progress: bool | None = None,
    skipped: list[Path] | None = None,
) -> dict:
    """Predict `plan_outputs`' images into `out_dir`; returns {"images", "skipped", "written", "results"}.

    Images are read one batch at a time. A file that turns out undecodable is skipped with a warning; the
    run files (COCO results, manifest) are written at the end and also when a later image fails, so what
    was predicted is never lost. `batch_size` images go through `Solver.predict_arrays` together, so the
    numbers equal `solver.predict(paths, batch_size=batch_size)`.
    """
    from tqdm.auto import tqdm

    from ait.engine.inference import load_image

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, received {batch_size}")
    out = Path(out_dir)
    skipped = list(skipped or [])
    check_outputs_are_free(planned, solver, out, list(protected))
    out.mkdir(parents=True, exist_ok=True)
    with_instances = any(task in solver.tasks for task in ("insseg", "det"))
    written: list[Path] = []
    detections: list[dict] = []
    done: list[PlannedImage] = []
    # by default a bar only on a terminal: a log file would collect one line per update
    disable = not sys.stderr.isatty() if progress is None else not progress
    bar = tqdm(total=len(planned), unit="image", desc="ait predict", disable=disable, file=sys.stderr)
    try:
        for start in range(0, len(planned), batch_size):
            batch, arrays = [], []
            for item in planned[start : start + batch_size]:
                try:
                    arrays.append(load_image(item.path))
                    batch.append(item)
                except ValueError as error:  # passed the header check, fails to decode (a truncated file)
                    warn(f"skipping {item.path}: {error}")
                    skipped.append(item.path)
                    bar.update(1)
            if not batch:
                continue
            predictions = solver.predict_arrays(arrays, [str(item.path) for item in batch])
            for item, prediction in zip(batch, predictions, strict=True):
                written += prediction.save(item.out_dir, item.name)
                if prediction.instances is not None:
                    for record in prediction.instances.to_coco(item.image_id):
                        record["file_name"] = item.file_name
                        detections.append(record)
                done.append(item)
                bar.update(1)
    finally:
        bar.close()
        if with_instances and done:
            _write_json(out / RESULTS_FILE, detections)
            _write_json(
                out / IMAGES_FILE,
                {
                    "info": {"description": f"images predicted by ait ({solver.config.name})"},
                    "images": [
                        {"id": i.image_id, "file_name": i.file_name, "width": i.width, "height": i.height}
                        for i in done
                    ],
                    "annotations": [],
                    "categories": [dict(c) for c in solver.categories],
                },
            )
            written += [out / RESULTS_FILE, out / IMAGES_FILE]
        if done:
            root = out.resolve()
            kept = {p for p in _previous_outputs(out) if p.exists()} | {p.resolve() for p in written}
            names = sorted(Path(os.path.relpath(p, root)).as_posix() for p in kept)
            _write_json(
                out / MANIFEST_FILE,
                {"solver": solver.source, "config": solver.config.name, "written": names},
            )
    return {
        "images": [item.path for item in done],
        "skipped": skipped,
        "written": written,
        "results": out / RESULTS_FILE if with_instances else None,
    }
