"""Can the Ray cluster place one trial at all?

Tune waits for ever for resources no node has: it only warns every minute that the cluster may
be autoscaling. A search whose trials can never be placed (``--gpus-per-trial 1`` on CPU-only
nodes, ``--cpus-per-trial 8`` on 2-core nodes, the node with the GPU gone) must instead stop in
seconds, with one line that says what one trial needs and what each live node has. The check runs
before Tune starts and again whenever nothing runs and a trial waits (a node can leave mid-search).
"""

from __future__ import annotations

import time
from typing import Any

from searchcore.errors import UsageError

PLACE_WAIT_S = 10.0  # how long a trial may wait with nothing running before the nodes are looked at again
_EPS = 1e-9


class UnplaceableTrial(UsageError):
    """No live node of the cluster has the resources one trial asks for."""


def live_nodes() -> list[tuple[str, dict[str, float]]]:
    """``(address, resources)`` of every live node of the connected cluster (``ray.nodes()``)."""
    import ray

    return [(str(n.get("NodeManagerAddress", "?")), {k: float(v) for k, v in (n.get("Resources") or {}).items()})
            for n in ray.nodes() if n.get("Alive")]


def placement_problem(nodes: list[tuple[str, dict[str, float]]], cpus: float, gpus: float) -> str | None:
    """None if some node can hold one trial of ``cpus`` CPUs and ``gpus`` GPUs; else the one-line reason.

    A trial is one placement-group bundle, so it must fit on a single node: two nodes of half the
    CPUs each do not add up to one trial.
    """
    need = {"CPU": cpus, "GPU": gpus}
    if any(all(res.get(k, 0.0) + _EPS >= v for k, v in need.items() if v > 0) for _, res in nodes):
        return None
    missing = sorted({k for k, v in need.items() if v > 0 and not any(res.get(k, 0.0) + _EPS >= v for _, res in nodes)}) \
        or ["CPU and GPU together"]
    have = "; ".join(f"{addr} has {_amount(res.get('CPU', 0.0))} CPU, {_amount(res.get('GPU', 0.0))} GPU" for addr, res in nodes) \
        or "no live node"
    return (f"no node of the Ray cluster can place a trial of {_amount(cpus)} CPU + {_amount(gpus)} GPU "
            f"(missing: {', '.join(missing)}): {have}; lower --cpus-per-trial/--gpus-per-trial or add a node that has them")


def _amount(x: float) -> str:
    return f"{x:g}"


def check_placement(cpus: float, gpus: float, wait_s: float = PLACE_WAIT_S,
                    nodes: Any = live_nodes, sleep: Any = time.sleep) -> None:
    """Raise :class:`UnplaceableTrial` unless a live node can hold one trial; a node still joining
    gets ``wait_s`` seconds to register before the search gives up."""
    deadline = time.monotonic() + wait_s
    while True:
        problem = placement_problem(nodes(), cpus, gpus)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise UnplaceableTrial(problem)
        sleep(0.5)


def placement_watch(cpus: float, gpus: float, wait_s: float = PLACE_WAIT_S) -> Any:
    """A Tune callback that ends the experiment with :class:`UnplaceableTrial` once no trial has run
    for ``wait_s`` while one waits and no live node could hold it (checked then, not before)."""
    from ray.tune import Callback

    class PlacementWatch(Callback):
        def __init__(self) -> None:
            self.stalled_since: float | None = None

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            status = {str(t.status) for t in trials}
            if "RUNNING" in status or "PENDING" not in status:
                self.stalled_since = None
                return
            now = time.monotonic()
            if self.stalled_since is None:
                self.stalled_since = now
            elif now - self.stalled_since >= wait_s:
                self.stalled_since = now
                problem = placement_problem(live_nodes(), cpus, gpus)
                if problem is not None:
                    raise UnplaceableTrial(problem)

    return PlacementWatch()


def unplaceable_cause(error: BaseException) -> UnplaceableTrial | None:
    """The :class:`UnplaceableTrial` behind an error Tune may have wrapped, if any."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, UnplaceableTrial):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
