"""A federation on one machine with Flower's Simulation Runtime (its in-memory SuperLink, Grid
and message queues), each virtual node running the real ClientApp in turn.

Flower 1.42's Simulation Runtime ships one backend, Ray, which starts a local cluster with
network ports and needs gigabytes; an edge device wants neither. `InProcessBackend` is a
`flwr` Backend that runs the ClientApp in this process, one message at a time. Flower builds
its backend by name from `...vce.backend.raybackend.RayBackend`, so while `simulate` runs that
name points here (restored afterwards)."""

from __future__ import annotations

import copy
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.common import Context, Message, RecordDict
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.telemetry import EventType

from edge_tl.errors import EdgeTLError
from edge_tl.fed.client import make_client_app
from edge_tl.fed.server import run_coordinator
from edge_tl.fed.settings import FedSettings
from edge_tl.store.models import TrainedModel

RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"
_LOCK = threading.Lock()  # one simulation at a time per process: the backend name is global


class InProcessBackend(Backend):
    """Runs each message through the ClientApp in this process (one worker)."""

    run_config: dict[str, Any] = {}

    def __init__(self, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)
        self.app_fn: Callable[[], Any] | None = None

    def build(self, app_fn: Callable[[], Any]) -> None:
        """Keep the function that loads the ClientApp."""
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        """One message at a time: a small device trains one node's model at a time."""
        return 1

    def is_worker_idle(self) -> bool:
        """The single worker is idle between messages."""
        return True

    def terminate(self) -> None:
        """Nothing to stop."""

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        """Run the ClientApp on `message` with the node's context (run config filled in)."""
        if self.app_fn is None:
            raise RuntimeError("InProcessBackend.build() was not called")
        # Flower's node store refuses a changed run_config: the app sees a copy that has it.
        ctx = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config=dict(context.run_config or self.run_config),
        )
        # Ray hands each actor its own copy; so must we (SecAgg+'s mod edits what it reads).
        out = self.app_fn()(message=copy.deepcopy(message), context=ctx)
        context.state = ctx.state
        return out, context


@contextmanager
def _in_process_backend(run_config: dict[str, Any]) -> Iterator[None]:
    """Point Flower's backend name at InProcessBackend (with this run's config) meanwhile."""
    backend = type("RayBackend", (InProcessBackend,), {"run_config": dict(run_config)})
    fake = types.ModuleType(RAY_BACKEND)
    fake.RayBackend = backend  # type: ignore[attr-defined]
    with _LOCK:
        saved = sys.modules.get(RAY_BACKEND)
        sys.modules[RAY_BACKEND] = fake
        try:
            yield
        finally:
            if saved is None:
                sys.modules.pop(RAY_BACKEND, None)
            else:
                sys.modules[RAY_BACKEND] = saved


def simulate(
    s: FedSettings,
    nodes: int,
    *,
    client_app: Any = None,
    verbose: bool = False,
) -> TrainedModel:
    """Run the federation `s` with `nodes` virtual nodes in this process; the stored model.

    Every node reads this store: one dataset per node (s.data lists `nodes` names) or shards
    of one dataset (s.data names one)."""
    if nodes < s.min_nodes:
        raise EdgeTLError(
            f"--nodes {nodes} is fewer than --min-nodes {s.min_nodes}",
            "a round could never start",
        )
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    from flwr.server import ServerApp

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        try:
            result["model"] = run_coordinator(grid, context)
        except BaseException as e:  # re-raised below, outside Flower's threads
            errors.append(e)
            raise

    run_config = s.to_run_config()
    context = Context(
        run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config)
    )
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    with _in_process_backend(run_config):
        try:
            _run_simulation(
                num_supernodes=nodes,
                exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                client_app=client_app or make_client_app(s.secagg),
                server_app=server_app,
                backend_name="in-process",
                server_app_context=context,
                verbose_logging=verbose,
            )
        except BaseException as e:
            if not errors:
                raise
            raise errors[0] from e
        finally:
            flwr_log.setLevel(level)
    if errors:
        raise errors[0]
    if "model" not in result:
        raise EdgeTLError("the simulated federation ended without a model", "see the log above")
    return result["model"]


__all__ = ["InProcessBackend", "simulate"]
