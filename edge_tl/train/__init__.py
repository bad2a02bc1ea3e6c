"""Training: the typed configuration (`config`) resolved once (`settings`), the ULMFiT recipe
(`recipe`: LM fine-tuning and classifier), its fastai learner (`fit`) on the fast CPU/CUDA path
(`engine`), the run from the vault with checkpoints (`runner`), what a run decides before it
trains (`prepare`), the TF-IDF baseline and head (`baseline`, `head`) and evaluation
(`evaluate`, `metrics`).

Entry points: `runner.train_from_vault`, `recipe.finetune_lm`, `recipe.train_classifier`,
`settings.resolve_config`, `evaluate.evaluate_model`.
"""
