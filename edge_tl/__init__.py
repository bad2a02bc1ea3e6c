"""edge_tl."""
