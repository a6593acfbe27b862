"""ait_eval never imports torch, and the README's example runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_does_not_load_torch():
    code = "import sys, ait_eval; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_everything_works_with_torch_unimportable():
    # sys.modules["torch"] = None makes any `import torch` raise ImportError, as if torch were absent
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        import numpy as np
        import ait_eval
        gt = np.full((48, 64), 2.0)
        agg = ait_eval.DepthMetrics()
        agg.update(gt * 1.1, gt)
        assert abs(agg.compute()["abs_rel"] - 0.1) < 1e-9
        mask = np.zeros((1, 32, 32), dtype=bool)
        mask[0, 4:20, 4:20] = True
        dets = ait_eval.detections_from_arrays(1, [[4, 4, 20, 20]], [0.9], [1], mask)
        gt_coco = {
            "images": [{"id": 1, "height": 32, "width": 32}],
            "categories": [{"id": 1}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 16, 16],
                             "segmentation": dets[0]["segmentation"]}],
        }
        res = ait_eval.evaluate_coco(gt_coco, dets, iou_types=("bbox", "segm", "boundary"))
        assert all(abs(r["AP"] - 1) < 1e-9 for r in res.values()), res
        assert ait_eval.mask_reconstruction_scores(mask, mask)["mean_boundary_iou"] == 1.0
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
