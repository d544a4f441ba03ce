"""Optuna helpers: replayed trials and the defaults every study starts from."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from models.registry import base_models, get_model_class
from pipelines.tuning import default_trial, replay_trial


class Knobs:
    def __init__(self, alpha: float = 0.5, depth: int = 3, mode: str = "b", l2: float = 0.0) -> None: ...

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "alpha": trial.suggest_float("alpha", 0.1, 1.0),
            "depth": trial.suggest_int("depth", 1, 8),
            "mode": trial.suggest_categorical("mode", ["a", "b"]),
            "l2": trial.suggest_float(
                "l2", 1e-6, 1e-2, log=True
            ),  # default 0 is outside: left to the sampler
            "extra": trial.suggest_int("extra", 2, 4),  # not a constructor argument
        }


def test_replay_answers_from_params_else_the_low_end() -> None:
    trial = replay_trial({"alpha": 0.7})
    assert Knobs.search_space(trial) == {"alpha": 0.7, "depth": 1, "mode": "a", "l2": 1e-6, "extra": 2}
    assert set(trial.suggested) == {"alpha", "depth", "mode", "l2", "extra"}


def test_default_trial_keeps_constructor_defaults_inside_their_ranges() -> None:
    assert default_trial(Knobs) == {"alpha": 0.5, "depth": 3, "mode": "b"}


@pytest.mark.parametrize("name", base_models())
def test_every_model_starts_tuning_from_its_defaults(name: str) -> None:
    model_class = get_model_class(name)
    study = optuna.create_study()
    study.enqueue_trial(default_trial(model_class))
    chosen: dict[str, Any] = {}
    study.optimize(lambda trial: chosen.update(model_class.search_space(trial)) or 0.0, n_trials=1)
    defaults = default_trial(model_class)
    assert defaults and {k: chosen[k] for k in defaults} == defaults
    model_class(**chosen)  # the suggestions are valid constructor arguments
