"""Weighted k-nearest-neighbour classification on embeddings (DINOv2 protocol, 4M-FACTS §8).

Embeddings are L2-normalised; for a query q the k gallery items with the highest cosine similarity
s_i vote for their class with weight exp(s_i / T) (k = 20, T = 0.07). Classes are ranked by their
summed votes; top-1 / top-5 accuracy is the share of queries whose label is among the best 1 / 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_classify(query: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """query (Q, D), gallery (G, D), gallery_labels (G,) int -> class scores (Q, num_classes).

    Processed in chunks of queries so a large gallery never needs a (Q, G) matrix at once.
    """
    g = F.normalize(gallery.float(), dim=1)
    k = min(k, g.shape[0])
    out = []
    for q in F.normalize(query.float(), dim=1).split(chunk):
        sim, idx = (q @ g.T).topk(k, dim=1)  # (q, k)
        weight = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weight.dtype)
        votes.scatter_add_(1, gallery_labels[idx].long(), weight)
        out.append(votes)
    return torch.cat(out)


def knn_topk_accuracy(query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                      gallery_labels: torch.Tensor, num_classes: int, k: int = 20, temperature: float = 0.07,
                      topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """-> {"top1": %, "top5": %} (percent, 0..100) of queries whose label is among the ``t`` best classes."""
    votes = knn_classify(query, gallery, gallery_labels, num_classes, k, temperature)
    # ties between classes are broken towards the lower class id (stable sort), like argmax
    ranked = torch.sort(votes, dim=1, descending=True, stable=True).indices
    hit = ranked == query_labels.long()[:, None]
    return {f"top{t}": float(hit[:, :t].any(1).double().mean() * 100) for t in topk}
