"""The ``insight`` command: look at a trained run from the shell.

    insight explain IMAGE [--label TEXT] [--configfile config/demo.yaml]

Run it in the workflow's directory: the config is ``config.yaml`` updated by each
``--configfile`` (as Snakemake does), validated against the workflow's schema, and the
run's files are read from ``--results``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parent.parent / "workflow/schemas/config.schema.yaml"


def _update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _update(base[key], value)
        else:
            base[key] = value
    return base


def load_config(configfiles: Sequence[str | Path], base: str | Path = "config.yaml") -> dict:
    """``base`` (when it exists) updated by each config file in order, then validated
    against the workflow schema, which also fills in the defaults."""
    from snakemake.utils import validate

    config: dict = {}
    for path in [base, *configfiles] if Path(base).exists() else list(configfiles):
        with open(path) as handle:
            _update(config, yaml.safe_load(handle) or {})
    if not config:
        raise FileNotFoundError(f"no config: {base} does not exist and no --configfile given")
    validate(config, schema=str(SCHEMA))
    return config


def _explain(args: argparse.Namespace) -> int:
    from insight.pipeline import explain_image_file

    config = load_config(args.configfile)
    explanation, png, json_path = explain_image_file(
        args.image, config, args.results, args.out, args.label, args.top
    )
    print(f"{explanation['label']!r}: score {explanation['score']:.4f}")
    for item in explanation["concepts"]:
        print(f"  {item['share']:7.1%}  {item['name'] or '-'} (concept {item['concept']})")
    print(f"wrote {png} and {json_path}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="insight", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain one image by its concepts (Fig. 4)")
    explain.add_argument("image", type=Path)
    explain.add_argument("--label", help="the label to explain (default: the best vocabulary term)")
    explain.add_argument("--configfile", nargs="*", default=[], help="config overrides, in order")
    explain.add_argument("--results", type=Path, default=Path("results"))
    explain.add_argument("--out", type=Path, default=Path("results/explain"))
    explain.add_argument("--top", type=int, default=5, help="concepts shown")
    explain.set_defaults(run=_explain)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, KeyError) as err:
        print(f"insight {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
