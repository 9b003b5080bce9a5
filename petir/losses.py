"""Training losses over sampled groups (query, [positive, negatives...]), shared by every task.

Both kinds leave out false negatives: a passage judged relevant to the query that is not its own positive (another
query's positive, or a mined negative the qrels call relevant) would otherwise be pushed down as if irrelevant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from petir.distributed import gather_objects, gather_with_gradient, is_distributed
from petir.sampling import Group


def false_negatives(groups: Sequence[Group], in_batch: bool, rows: slice = slice(None)) -> torch.Tensor:
    """Bool mask [queries, candidates]: True where a candidate is judged relevant to the query but is not its own
    positive. Candidates are every passage of the batch (``in_batch``, the bi-encoder's contrastive loss) or the
    query's own group (the cross-encoder's). Passages are matched by id, so the same passage drawn for two queries
    is caught too. ``rows`` picks the queries (one rank's share of a gathered batch)."""
    sizes = [len(group.passages) for group in groups]
    starts = np.cumsum([0, *sizes])
    chosen = range(len(groups))[rows]
    mask = torch.zeros(len(chosen), int(starts[-1]) if in_batch else sizes[0], dtype=torch.bool)
    columns: dict[str, list[int]] = {}  # docid -> its columns among all candidates
    for group, start in zip(groups, starts, strict=False):
        for offset, docid in enumerate(group.docids):  # groups without ids match nothing
            columns.setdefault(docid, []).append(int(start) + offset)
    for row, index in enumerate(chosen):
        first = int(starts[index])
        for docid in groups[index].positives:
            for column in columns.get(docid, ()):
                local = column if in_batch else column - first
                if column != first and (in_batch or 0 < local < sizes[index]):
                    mask[row, local] = True
    return mask


def ids_only(group: Group) -> Group:
    """What masking needs of a group (its ids), light enough to send to every rank."""
    return group._replace(query="", passages=[""] * len(group.passages))


def contrastive_batch(
    tokenize: Callable[[Sequence[str], int], dict[str, torch.Tensor]],
    groups: Sequence[Group],
    query_length: int,
    passage_length: int,
) -> dict[str, Any]:
    """A training batch of :func:`contrastive_loss`'s models: the queries and every group's passages (positive
    first) tokenised, and the groups' ids for masking false negatives."""
    return {
        "queries": tokenize([group.query for group in groups], query_length),
        "passages": tokenize([passage for group in groups for passage in group.passages], passage_length),
        "groups": [ids_only(group) for group in groups],
    }


def contrastive_loss(
    queries: torch.Tensor, passages: torch.Tensor, groups: Sequence[Group], temperature: float
) -> torch.Tensor:
    """Each query [q, d] against every passage [q * group, d] of the batch (its positive, its hard negatives and all
    other queries' passages), except its false negatives; passages come grouped per query, positive first, and
    ``groups`` are the batch's (their ids, :func:`ids_only`).

    Under ``torchrun`` the batch is the global one, as in Tevatron and sentence-transformers: passage vectors
    are gathered from every rank (gradients flow back to the rank that encoded them), so each query sees
    every passage of every process as a candidate; the loss equals one process on the whole batch."""
    group = passages.shape[0] // queries.shape[0]
    first = 0
    if is_distributed():
        everyone = gather_objects(list(groups))
        first = torch.distributed.get_rank() * len(groups)
        groups = [group for part in everyone for group in part]
        passages = gather_with_gradient(passages)
    mask = false_negatives(groups, True, slice(first, first + queries.shape[0])).to(queries.device)
    scores = (queries @ passages.T / temperature).masked_fill(mask, float("-inf"))
    labels = (first + torch.arange(queries.shape[0], device=scores.device)) * group
    return F.cross_entropy(scores, labels)


def listwise_loss(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each query's group of scores [queries, group] (positive first); ``mask`` (same
    shape, :func:`false_negatives` within the group) leaves false negatives out of the softmax."""
    labels = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.masked_fill(mask, float("-inf")), labels)


def pointwise_loss(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each score [queries, group] (the positive first, relevant; the rest not), false
    negatives (``mask``) left out."""
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    losses = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    return losses[~mask].mean()


#: Losses over each query's own group of scores, by the name a task option gives them.
GROUP_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "listwise": listwise_loss,
    "pointwise": pointwise_loss,
}
