"""The machine: what it has (`device`), how much of it edge_tl may use (`profiles`), what fits
in memory (`planner`), and the device, dtype and threads a run uses (`runtime`).
"""
