"""The frozen models: the CLIP backbone, the DINOiser head (Eq. 1-2), the dense encoder and the text tower."""
