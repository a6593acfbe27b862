"""AiT (All in Tokens) task-solver: configs, model, losses, training/eval engine, CLI and demo.

from ait.config import create_config, list_configs
cfg = create_config("cpu_depth_tiny", ["optim.max_iters=10"])
"""

from ait.config import Config, ConfigError, create_config, list_configs

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "__version__", "create_config", "list_configs"]
