"""procpool's logger: loguru, disabled for "procpool" until the user enables it.

Modules that log import ``logger`` from here, so the switch-off happens
before any procpool message can be emitted.
"""

from loguru import logger

logger.disable("procpool")

__all__ = ["logger"]
