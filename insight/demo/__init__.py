"""The offline demo world: generated scenes and benchmark layouts, the tiny CLIP's training, recovery scoring."""
