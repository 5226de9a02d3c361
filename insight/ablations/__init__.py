"""Ablation variants side by side: every task's table with a row per variant, and the
headline figure of each task in one table and one plot."""
