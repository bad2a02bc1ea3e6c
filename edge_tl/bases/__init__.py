"""Pretrained bases: the signed bundle format (`bundle` reads, `writer` packs, `manifest`,
`signing`, `layout`), the store of imported bases (`store`), fastai's WT103 files (`wt103`), and
pretraining a base on public text (`corpus`, `tokens`, `pretrain`, `pack`).
"""
