"""top_k: the one ranking routine behind Recommender.recommend and blend tuning."""

import numpy as np
import scipy.sparse as sp

from models.base import top_k


def test_best_first_with_masks_and_empty_slots() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0]]))
    items, best = top_k(scores, 4, exclude)
    assert items.tolist() == [[2, 0, 1, -1], [0, 1, 2, -1]]  # masked item last, slot 4 empty
    assert best[0, 2] == -np.inf and best[0, 3] == -np.inf and best[1, 0] == 0.3
    assert scores[0, 1] == 0.9  # the caller's scores are not modified
