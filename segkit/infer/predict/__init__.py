"""`segkit predict`: folders of images -> masks, overlays, per-image class areas.

inputs.py (what is read) -> run.py (the loop, through segkit.infer.segment) -> writer.py
(what is written).
"""

from segkit.infer.predict.inputs import InputError, list_inputs
from segkit.infer.predict.run import PredictOptions, PredictResult, predict_folder
from segkit.infer.predict.writer import PredictFolder, save_mask

__all__ = ["InputError", "PredictFolder", "PredictOptions", "PredictResult", "list_inputs", "predict_folder",
           "save_mask"]
