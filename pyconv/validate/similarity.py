"""Whether a model's sentence embeddings mean something: a paraphrase must score high and an unrelated
sentence low, which random weights cannot do."""

from __future__ import annotations

from typing import Any

SIMILAR = ("A man is playing a guitar.", "Someone plays an acoustic guitar.")
UNRELATED = ("A man is playing a guitar.", "The stock market fell sharply on Tuesday.")
SIMILAR_ABOVE, UNRELATED_BELOW = 0.7, 0.5


def similarity_cosines(encoder: Any, tok: Any) -> tuple[float, float]:
    """Cosines of the mean-pooled last hidden states (real tokens only) of the paraphrase and the unrelated pair."""
    import torch

    def cosine(a: str, b: str) -> float:
        batch = tok([a, b], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return float(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0))

    return cosine(*SIMILAR), cosine(*UNRELATED)
