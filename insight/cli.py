"""The ``insight`` command: look at a trained run from the shell.

    insight explain IMAGE [--label TEXT] [--configfile FILE]...
    insight caption IMAGE [--scale NAME=FACTOR]... [--family] [--configfile FILE]...
    insight export-sae OUT [--format dictionary_learning|saelens] [--results DIR]
    insight export OUT [--configfile FILE]... [--results DIR]

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

from insight.core.sections import Settings


def _update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _update(base[key], value)
        else:
            base[key] = value
    return base


def load_config_dict(configfiles: Sequence[str | Path], base: str | Path = "config.yaml") -> dict:
    """``base`` (when it exists) updated by each config file in order, then validated
    against the workflow schema, which also fills in the defaults."""
    from insight.core.settings import validate_config

    config: dict = {}
    for path in [base, *configfiles] if Path(base).exists() else list(configfiles):
        with open(path) as handle:
            _update(config, yaml.safe_load(handle) or {})
    if not config:
        raise FileNotFoundError(f"no config: {base} does not exist and no --configfile given")
    return validate_config(config)


def load_config(configfiles: Sequence[str | Path], base: str | Path = "config.yaml") -> Settings:
    """The typed settings of :func:`load_config_dict`, as a workflow job gets them."""
    from insight.core.settings import settings_from_config

    return settings_from_config(load_config_dict(configfiles, base))


def _explain(args: argparse.Namespace) -> int:
    from insight.views.explain import explain_image_file

    config = load_config(args.configfile)
    explanation, png, json_path = explain_image_file(
        args.image, config, args.results, args.out, args.label, args.top
    )
    print(f"{explanation['label']!r}: score {explanation['score']:.4f}")
    for item in explanation["concepts"]:
        print(f"  {item['share']:7.1%}  {item['name'] or '-'} (concept {item['concept']})")
    print(f"wrote {png} and {json_path}")
    return 0


def scale_request(text: str) -> tuple[str, float]:
    """``NAME=FACTOR`` -> ``(name, factor)``."""
    name, sep, factor = text.rpartition("=")
    try:
        value = float(factor)
    except ValueError:
        value = None
    if not sep or not name or value is None:
        raise argparse.ArgumentTypeError(f"expected NAME=FACTOR, e.g. zebra=0, got {text!r}")
    return name, value


def _caption(args: argparse.Namespace) -> int:
    from insight.views.steering import caption_image_file

    config = load_config(args.configfile)
    result = caption_image_file(args.image, config, args.results, args.scale, args.family)
    print(f"caption:          {result['caption']}")
    if result["steered_caption"] is not None:
        scaled = ", ".join(f"{c} x{f:g}" for c, f in result["scaled_concepts"].items())
        print(f"steered caption:  {result['steered_caption']}   (concepts {scaled})")
    return 0


def _export_sae(args: argparse.Namespace) -> int:
    from insight.sae.interop import export_run_sae

    folder = export_run_sae(args.results, args.out, args.format)
    print(f"wrote the SAE of {args.results} as {args.format} to {folder}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from insight.views.export import export_run

    folder = export_run(args.results, args.out, load_config(args.configfile))
    print(f"wrote {folder}: upload it with `huggingface-cli upload USER/NAME {folder}`")
    return 0


def _settings(args: argparse.Namespace) -> int:
    from insight.core.settings import settings_reference

    print(settings_reference(), end="")
    return 0


CONFIGFILE = {
    "action": "append",
    "default": [],
    "metavar": "FILE",
    "help": "a config file over config.yaml; give it again for more, applied in order",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="insight", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain one image by its concepts (Fig. 4)")
    explain.add_argument("image", type=Path)
    explain.add_argument("--label", help="the label to explain (default: the best vocabulary term)")
    explain.add_argument("--configfile", **CONFIGFILE)
    explain.add_argument("--results", type=Path, default=Path("results"))
    explain.add_argument("--out", type=Path, default=Path("results/explain"))
    explain.add_argument("--top", type=int, default=5, help="concepts shown")
    explain.set_defaults(run=_explain)
    caption = commands.add_parser("caption", help="caption one image, before and after steering")
    caption.add_argument("image", type=Path)
    caption.add_argument(
        "--scale",
        type=scale_request,
        action="append",
        default=[],
        metavar="NAME=FACTOR",
        help="scale the concepts with this name (0 removes them)",
    )
    caption.add_argument("--family", action="store_true", help="scale their descendants too")
    caption.add_argument("--configfile", **CONFIGFILE)
    caption.add_argument("--results", type=Path, default=Path("results"))
    caption.set_defaults(run=_caption)
    export = commands.add_parser(
        "export-sae", help="write the run's SAE as dictionary_learning (the release) or SAELens"
    )
    export.add_argument("out", type=Path, help="a new folder")
    export.add_argument(
        "--format", choices=("dictionary_learning", "saelens"), default="dictionary_learning"
    )
    export.add_argument("--results", type=Path, default=Path("results"))
    export.set_defaults(run=_export_sae)
    share = commands.add_parser(
        "export", help="the run as a folder for the Hugging Face Hub, with a model card"
    )
    share.add_argument("out", type=Path, help="a new folder")
    share.add_argument("--configfile", **CONFIGFILE)
    share.add_argument("--results", type=Path, default=Path("results"))
    share.set_defaults(run=_export)
    reference = commands.add_parser(
        "settings", help="every setting: type, default, whether it changes results (Markdown)"
    )
    reference.set_defaults(run=_settings)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"insight {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
