"""AiT (All in Tokens) task-solver: configs, model, losses, training/eval engine, CLI and demo.

import ait
solver = ait.load("runs/my_run")              # a run folder, a checkpoint or an original .pth
result = solver.predict("room.jpg")           # result.depth (metres), result.instances, result.save(dir)

from ait.config import create_config, list_configs
cfg = create_config("cpu_depth_tiny", ["optim.max_iters=10"])
"""

from ait.api import Instances, Prediction, Solver, load
from ait.config import Config, ConfigError, create_config, list_configs

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Instances",
    "Prediction",
    "Solver",
    "__version__",
    "create_config",
    "list_configs",
    "load",
]
