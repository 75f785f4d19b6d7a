"""In-process, virtual-time network simulation for tests, benchmarks and the sandbox.

The package exports what :mod:`btchat.sim.network` exports, as that module lists it.
"""

from btchat.sim import network
from btchat.sim.network import *  # noqa: F403  (exactly network.__all__)

__all__: list[str] = []
__all__ += network.__all__  # a form type checkers follow
