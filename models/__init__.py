"""Bundled trained models and data sets (installed as ``converter.bundled``); train_models.py made them."""
