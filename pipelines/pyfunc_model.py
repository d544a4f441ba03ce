"""The MLflow pyfunc face of a bundle: DataFrame of user ids (and k) in, ranked recommendations out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from pipelines.bundle import Bundle


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Artifacts: ``bundle`` (a folder saved by ``Bundle.save``)."""

    def load_context(self, context: Any) -> None:
        self.bundle = Bundle.load(Path(context.artifacts["bundle"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        rows = []
        for _, request in model_input.iterrows():
            k = int(request["k"]) if "k" in request and pd.notna(request["k"]) else 10
            items, cold = self.bundle.recommend(str(request["user_id"]), k)
            rows += [
                {
                    "user_id": str(request["user_id"]),
                    "rank": r + 1,
                    "item_id": i,
                    "score": s,
                    "cold_start": cold,
                }
                for r, (i, s) in enumerate(items)
            ]
        return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score", "cold_start"])
