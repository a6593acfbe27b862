"""The prediction grid is a real PNG of the expected size."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ait.visualize import image_for_display, save_prediction_grid


def test_save_prediction_grid_writes_png(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 48, generator=gen)
    gt = torch.rand(2, 1, 32, 48, generator=gen) * 5 + 0.5
    gt[:, :, :8, :8] = 0  # invalid corner, drawn black
    pred = gt.clamp(min=0.5)
    masks = torch.zeros(2, 32, 48, dtype=torch.bool)
    masks[:, 4:20, 10:30] = True
    instances = [
        {
            "boxes": torch.tensor([[10.0, 4.0, 30.0, 20.0]]),
            "scores": torch.tensor([0.9]),
            "masks": masks[i : i + 1],
        }
        for i in range(2)
    ]
    path = save_prediction_grid(tmp_path / "grid.png", images, gt, pred, instances)
    with Image.open(path) as png:
        assert png.format == "PNG"
        width, height = png.size
        pixels = np.asarray(png.convert("RGB"))
    assert width > height > 0  # 4 panels side by side, 2 rows
    assert (pixels.sum(-1) == 0).any()  # the invalid depth corner is black


def test_image_for_display_undoes_coco_normalisation():
    mean = torch.tensor([123.675, 116.28, 103.53]) / 255
    std = torch.tensor([58.395, 57.12, 57.375]) / 255
    image = torch.full((3, 2, 2), 0.25)
    normalised = (image - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(image_for_display(normalised), 0.25, atol=1e-6)
    assert image_for_display(np.full((2, 2, 3), 255, dtype=np.uint8)).max() == 1.0


def test_each_shown_instance_is_labelled_with_its_class_name_and_score(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    texts: list[str] = []
    original = Axes.text

    def recording(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", recording)
    images = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    instances = [
        {
            "boxes": torch.tensor([[10.0, 4.0, 30.0, 20.0], [1.0, 1.0, 8.0, 8.0], [2.0, 2.0, 9.0, 9.0]]),
            "scores": torch.tensor([0.87, 0.45, 0.1]),  # the last one is below the threshold: hidden
            "labels": torch.tensor([2, 0, 1]),
        }
    ]
    save_prediction_grid(
        tmp_path / "g.png", images, None, None, instances, class_names=["chair", "table", "lamp"]
    )
    assert texts == ["lamp 0.87", "chair 0.45"]


def test_a_label_stays_inside_its_panel_when_the_box_starts_at_the_top(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    labels = []
    original = Axes.text

    def recording(self, x, y, s, *args, **kwargs):
        labels.append(original(self, x, y, s, *args, **kwargs))
        return labels[-1]

    monkeypatch.setattr(Axes, "text", recording)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    instances = [
        {
            # a tall object from the image's top edge, and one well below it
            "boxes": torch.tensor([[20.0, 0.0, 44.0, 64.0], [2.0, 40.0, 16.0, 60.0]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 1]),
        }
    ]
    save_prediction_grid(tmp_path / "g.png", images, None, None, instances, class_names=["cabinet", "bin"])
    assert len(labels) == 2
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(labels[0].get_figure()).get_renderer()  # the grid's figure is closed
    for label in labels:
        text, panel = label.get_window_extent(renderer), label.axes.get_window_extent(renderer)
        assert panel.y0 - 1 <= text.y0 and text.y1 <= panel.y1 + 1, label.get_text()
