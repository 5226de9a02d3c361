"""INSIGHT: interpretable, spatially grounded, hierarchical concepts in a CLIP vision encoder.

The package is the library behind the Snakemake workflow, one subpackage per stage in the
order the data flows::

    data -> models -> features -> sae -> hierarchy -> naming -> tasks -> views
                                                                       (demo, core)

Each paper equation lives in one function whose docstring names it. Importing ``insight``
is cheap (no torch): the Snakefile imports ``insight.core`` to validate config and to
version the rules.
"""

__version__ = "0.1.0"
