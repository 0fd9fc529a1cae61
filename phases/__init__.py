"""Built-in phases of a rollout plan."""

from rollout.phase import FunctionPhase, Phase

from ._basic import Gate, Shell, Watch
from ._deploy import Deploy
from ._smoke import Smoke

__all__ = ["Deploy", "FunctionPhase", "Gate", "Phase", "Shell", "Smoke", "Watch"]
