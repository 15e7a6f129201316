"""Flawed model files for the tuning benchmark (model contract: ``build_model``)."""
