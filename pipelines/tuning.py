"""Small Optuna helpers shared by the train and fuse stages."""

from __future__ import annotations

import inspect
from typing import Any


def replay_trial(params: dict[str, Any]) -> Any:
    """A trial that answers each suggestion from ``params``, else with the low end (or first choice) of its
    range; ``suggested`` records every (name, value) it answered."""
    import optuna

    class Replay(optuna.trial.FixedTrial):
        suggested: dict[str, Any]
        ranges: dict[str, Any]

        def _suggest(self, name: str, distribution: Any) -> Any:
            self.ranges[name] = distribution
            if name not in self._params:
                self._params[name] = (
                    distribution.choices[0] if hasattr(distribution, "choices") else distribution.low
                )
            value = super()._suggest(name, distribution)
            self.suggested[name] = value
            return value

    trial = Replay(dict(params))
    trial.suggested, trial.ranges = {}, {}
    return trial


def _in_range(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):  # e.g. 0 for a log-scaled range
        return False


def default_trial(model_class: Any) -> dict[str, Any]:
    """The suggestion values that reproduce the model's constructor defaults, for the parameters its search
    space tunes under the same name: enqueued as trial 0, so tuning starts from the tuned-by-hand defaults
    instead of a random draw and can only improve on them."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(model_class.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    probe = replay_trial({})
    model_class.search_space(probe)
    return {
        name: defaults[name]
        for name, distribution in probe.ranges.items()
        if name in defaults and _in_range(distribution, defaults[name])
    }
