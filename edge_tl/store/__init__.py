"""Storage on the device, all under $EDGE_TL_HOME: the age identity (`keys`), the encrypted
dataset vault (`vault` format, `datasets`, `sources` readers), trained models (`models`),
training checkpoints (`checkpoints`), and atomic private file writes (`files`, `home`).

Nothing here imports torch at import time: `edge-tl data list` and `keys show` stay quick.
"""
