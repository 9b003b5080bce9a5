"""Data-parallel training as the field does it: in-batch negatives gathered across ranks (gloo, 2 CPU processes)."""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY_PASSAGES, perturb
from petir.sampling import Group
from petir.tasks.retrieval import BiEncoder

WORLD = 2
# Four queries, two per rank. Passage d4 is judged relevant to query 0 (on rank 0) and is query 2's positive (on
# rank 1): only a mask built over the gathered batch catches it as query 0's false negative.
GROUPS = [
    Group("the cat", [TINY_PASSAGES[0], TINY_PASSAGES[1]], ("d0", "d1"), frozenset({"d0", "d4"})),
    Group("cancer risk", [TINY_PASSAGES[2], TINY_PASSAGES[6]], ("d2", "d6"), frozenset({"d2"})),
    Group("protein gene", [TINY_PASSAGES[4], TINY_PASSAGES[7]], ("d4", "d7"), frozenset({"d4"})),
    Group("cell study", [TINY_PASSAGES[9], TINY_PASSAGES[8]], ("d9", "d8"), frozenset({"d9"})),
]


def _model(backbone: Path) -> BiEncoder:
    torch.manual_seed(0)
    model = perturb(BiEncoder(str(backbone), "iaa", {"r": "4", "ar": "4"}))
    return model.eval()  # no dropout: the two runs must compute the same function


def _loss_and_gradients(model: BiEncoder, groups: list[Group]) -> tuple[float, dict[str, torch.Tensor]]:
    loss = model(model.collate(groups))
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), gradients


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, backbone: Path, port: int, output: Path) -> None:
    torch.set_num_threads(1)
    # Everything over loopback with a deadline: on sandboxed CI machines the host name may resolve to an address
    # the ranks cannot reach, and a file rendezvous needs file locks the temporary directory may not honour.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    model = _model(backbone)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    share = len(GROUPS) // WORLD
    loss = ddp(model.collate(GROUPS[rank * share : (rank + 1) * share]))
    loss.backward()  # DDP averages the gradients over the ranks
    losses = [None] * WORLD
    dist.all_gather_object(losses, loss.item())
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    if rank == 0:
        torch.save({"loss": sum(losses) / WORLD, "gradients": gradients}, output)
    # Tear down behind a barrier (the trainer's last collective is one too), then DDP before the group: a gloo
    # worker may still be freeing the tensors of the last collective, which takes the GIL, and freeing the group
    # joins that worker while holding the GIL (a deadlock seen in CI when rank 1 raced from all_gather_object to
    # its exit).
    dist.barrier()
    del ddp
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes: about 25 s
@pytest.mark.skipif(sys.platform != "linux", reason="gloo over the loopback interface 'lo'")
def test_gathered_negatives_equal_one_process_on_the_global_batch(tiny_backbone, tmp_path):
    mp.spawn(_rank, args=(tiny_backbone, _free_port(), tmp_path / "ddp.pt"), nprocs=WORLD, join=True)
    distributed = torch.load(tmp_path / "ddp.pt")
    loss, gradients = _loss_and_gradients(_model(tiny_backbone), GROUPS)
    assert distributed["loss"] == pytest.approx(loss, rel=1e-5)
    assert gradients.keys() == distributed["gradients"].keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(distributed["gradients"][name], gradient, rtol=1e-4, atol=1e-6, msg=name)
    # the cross-rank false negative mattered: without its mask the single-process loss differs
    unmasked = _model(tiny_backbone)
    plain = [group._replace(positives=frozenset(group.docids[:1])) for group in GROUPS]
    assert unmasked(unmasked.collate(plain)).item() != pytest.approx(loss, rel=1e-5)
