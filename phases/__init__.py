"""Built-in phases of a rollout plan."""

from rollout.phase import FunctionPhase, Phase

from ._basic import Gate, Shell, Watch
from ._deploy import Deploy
from ._gradual import Gradual
from ._migrate import Migrate
from ._preflight import Preflight
from ._smoke import Smoke

__all__ = ["Deploy", "FunctionPhase", "Gate",
    "Gradual", "Migrate", "Phase", "Preflight", "Shell", "Smoke", "Watch"]
