"""What ships: the ONNX export (`export`, with the TF-IDF head's nodes in `onnx_head`) and the
classifier that runs it on onnxruntime alone (`predict.Classifier`, with the pure-Python port of
fastai's tokenizer in `tokenizer`). `predict` and `tokenizer` never import torch, fastai or spaCy.
"""
