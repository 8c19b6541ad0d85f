"""From pixels to masks: segment.py (THE whole-image-or-windows dispatch, flip, argmax),
sliding.py (windows for images far larger than the training crops), predict/ (`segkit predict`:
folders in, masks, overlays and areas out).
"""
