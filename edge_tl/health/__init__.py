"""`edge-tl doctor --check-store`: every file under $EDGE_TL_HOME checked with the loaders the
commands use (`integrity.check_store`); nothing is repaired.
"""
