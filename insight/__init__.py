"""INSIGHT: interpretable, spatially grounded, hierarchical concepts in a CLIP vision encoder.

The package is the library behind the Snakemake workflow: one module per stage, each
paper equation in one function whose docstring names it. Importing ``insight`` is cheap
(no torch): the Snakefile imports it to validate config and to version the stages.
"""

__version__ = "0.1.0"
