"""`edge-tl compare`: the transfer-vs-scratch-vs-TF-IDF learning curve as resumable units.

`run.run_compare` runs a comparison; `plan` says what it runs and how long it takes, `unit` runs
one unit, `lm` keeps the shared language model, `resume` a unit's checkpoint, `results` the
results file, `ensemble` the transfer + TF-IDF series and `report` the tables and the plot.
"""
