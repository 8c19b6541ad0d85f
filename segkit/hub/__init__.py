"""Sharing a trained model: export.py (a transformers folder with its image processor and a
card; `segkit push`), card.py (the model card with model-index metadata), explain.py (Hub failures
in words).
"""
