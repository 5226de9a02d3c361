"""The tasks INSIGHT explains (Sec. 4): open-vocabulary segmentation, interpretability, classification, captioning."""
