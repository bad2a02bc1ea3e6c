"""Federated fine-tuning on Flower: nodes train the classifier on their own encrypted data and
send only weight deltas, averaged by the coordinator (FedAvg, under SecAgg+ by default).

`client` (the node's ClientApp), `server` (the coordinator's ServerApp), `strategy` (guarded
FedAvg and the reply checks), `weights` (the shared starting point, the arrays that travel and
their checks), `local` (what a node does with its rows), `checkpoint` (encrypted round
checkpoints), `simulation` (one machine, Flower's Simulation Runtime), `site` (certificates,
node keys and Flower's SuperLink / SuperNode / `flwr run` for a real site).
"""

from __future__ import annotations

import os
import sys

# Flower reports usage over the network unless told not to; edge_tl never reaches the network.
# flwr reads the variable once, at import: set it for what imports flwr later (and for the
# Flower programs edge_tl starts), and switch it off in a flwr imported already.
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
if "flwr.supercore.telemetry" in sys.modules:
    sys.modules["flwr.supercore.telemetry"].FLWR_TELEMETRY_ENABLED = "0"

from edge_tl.fed.settings import FedSettings, settings_from_config  # noqa: E402
from edge_tl.fed.weights import UpdateError, check_arrays  # noqa: E402

__all__ = ["FedSettings", "UpdateError", "check_arrays", "settings_from_config"]
