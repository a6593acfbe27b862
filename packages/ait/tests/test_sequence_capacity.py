"""A synthetic-rooms run whose rooms hold more objects than the instance sequence is refused up front.

Otherwise every step would train on a random subset of a room's objects and the evaluation would score
all of them: recall capped in silence. `data.synthetic_objects` is the generator's range of objects per room.
"""

from __future__ import annotations

import pytest

from ait.cli import main
from ait.config import ConfigError, create_config
from ait.data import build_raw_dataset


@pytest.mark.parametrize("name", ["cpu_insseg_tiny", "cpu_joint_tiny", "cpu_joint_demo"])
def test_the_cpu_configs_fit_every_object_of_their_rooms(name):
    cfg = create_config(name)
    assert cfg.data.synthetic_objects[1] <= cfg.model.max_objects
    rooms = build_raw_dataset(cfg, "insseg", "train")
    assert max(len(rooms[i]["labels"]) for i in range(8)) <= cfg.model.max_objects


def test_more_objects_than_the_sequence_holds_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        create_config("cpu_joint_demo", {"model.max_objects": 6})
    message = str(error.value)
    assert message.startswith("data.synthetic_objects: expected at most model.max_objects=6 objects per room")
    assert message.endswith("got (3, 8)")
    # fewer objects per room, or a longer sequence, are both fine
    create_config("cpu_joint_demo", {"model.max_objects": 6, "data.synthetic_objects": (2, 6)})
    create_config("cpu_insseg_tiny", {"model.max_objects": 8, "data.synthetic_objects": (3, 8)})
    # depth-only runs have no instance sequence to overflow
    create_config("cpu_depth_tiny", {"data.synthetic_objects": (3, 20)})


def test_an_inverted_range_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"data.synthetic_objects: expected \(low, high\) with 0 <= low <= high"
    ):
        create_config("cpu_insseg_tiny", {"data.synthetic_objects": (4, 2)})


def test_on_the_command_line_it_is_one_error_line(capsys):
    assert main(["show-config", "cpu_insseg_tiny", "--cfg-options", "data.synthetic_objects=3,8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ait: error: data.synthetic_objects: expected at most model.max_objects=4")
    assert err.count("\n") == 1
