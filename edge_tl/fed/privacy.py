"""Differential privacy of a federation, node by node (DP-FedAvg with client-side clipping,
McMahan et al. 2018): each node clips its whole update to L2 norm C, the coordinator adds
Gaussian noise of standard deviation z * C / K to the mean of K updates (Flower's helpers do
both). What one node's data can change in the model is then bounded, whatever it holds.

The (epsilon, delta) reported is the Rényi-DP bound of the Gaussian mechanism composed over
the rounds (Mironov 2017): epsilon(alpha) = T * alpha / (2 z^2) per order alpha, converted by
epsilon = min over alpha of epsilon(alpha) + log(1 / delta) / (alpha - 1), which has the closed
form T / (2 z^2) + sqrt(2 T log(1 / delta)) / z. Every node takes part in every round here, so
no subsampling amplification is claimed: with fewer nodes per round the bound still holds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flwr.supercore.differential_privacy import (
    add_gaussian_noise_inplace,
    clip_inputs_inplace,
    compute_stdv,
    get_norm,
)


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The epsilon of `rounds` Gaussian mechanisms at noise multiplier z (inf without noise)."""
    if noise_multiplier <= 0 or rounds <= 0:
        return math.inf if rounds > 0 else 0.0
    z2 = noise_multiplier**2
    return rounds / (2 * z2) + math.sqrt(2 * rounds * math.log(1 / delta)) / noise_multiplier


def clip_update(delta: list[np.ndarray], clip: float) -> float:
    """Scale the whole update to L2 norm <= `clip` in place; its norm before."""
    norm = get_norm(delta)
    if norm > clip:  # Flower's helper divides by the norm
        clip_inputs_inplace(delta, clip)
    return norm


def add_noise(
    mean: Sequence[np.ndarray], noise_multiplier: float, clip: float, nodes: int
) -> float:
    """Add N(0, (z * clip / nodes)^2) to every value of the mean of `nodes` updates, in place;
    the standard deviation used."""
    std = compute_stdv(noise_multiplier, clip, max(nodes, 1))
    add_gaussian_noise_inplace(list(mean), std)
    return std


__all__ = ["add_noise", "clip_update", "epsilon"]
