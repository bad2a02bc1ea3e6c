"""The node's ClientApp. Training and evaluation run in `node` (imported on demand); by default
a node answers a training request only under SecAgg+, so a coordinator cannot quietly ask for
a plain update."""

from __future__ import annotations

import logging
from typing import Any

from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, Message, MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from edge_tl.errors import ConfigError, EdgeTLError

log = logging.getLogger("edge_tl.fed")
REQUIRE_SECAGG = "require-secagg"  # node config: answer training requests only under SecAgg+


def client_fn(context: Context) -> Any:
    """Flower's factory: this node's client for one message."""
    try:
        from edge_tl.fed.node import EdgeClient  # torch and fastai: only for fit and evaluate

        return EdgeClient(context).to_client()
    except EdgeTLError as e:
        log.error("edge_tl node: %s", e)
        raise


def _is_secagg(msg: Message) -> bool:
    cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return cfg is not None and Key.STAGE in cfg


def secagg_guard(default_required: bool = True) -> Any:
    """A mod: SecAgg+ messages go through Flower's secaggplus_mod; a plain training request
    is refused unless the node config sets require-secagg=false."""

    def mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        if _is_secagg(msg):
            return secaggplus_mod(msg, ctxt, call_next)
        required = ctxt.node_config.get(REQUIRE_SECAGG, default_required)
        if required is True or str(required).lower() == "true":
            raise ConfigError(
                "the coordinator asked for an update without SecAgg+, which this node refuses",
                f"run the federation with SecAgg+, or set node config {REQUIRE_SECAGG}=false",
            )
        return call_next(msg, ctxt)

    return mod


def make_client_app(require_secagg: bool = True) -> ClientApp:
    """The node's ClientApp (`require_secagg`: its default when the node config is silent)."""
    return ClientApp(client_fn=client_fn, mods=[secagg_guard(require_secagg)])


client_app = make_client_app()

__all__ = ["REQUIRE_SECAGG", "client_app", "client_fn", "make_client_app", "secagg_guard"]
