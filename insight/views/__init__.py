"""Looking at concepts: heatmaps, the concept browser, single-image explanations, steering."""
