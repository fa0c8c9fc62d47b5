"""`ttslens` command line: each subcommand is one config dataclass and one package function."""

from __future__ import annotations

import argparse
import json
import os
import sys

from app.cli_args import add_dataclass_args, from_args


def _commands():
    from sae.commands import (
        EvalConfig,
        HarvestConfig,
        QuickstartConfig,
        run_eval,
        run_harvest,
        run_quickstart,
    )
    from sae.training import TrainConfig, train

    def do_train(cfg):
        res = train(cfg)
        return {"out": str(res.path), **res.metrics}

    return {
        "train": (TrainConfig, do_train, "train an SAE on a model's residual stream or on cached activations"),
        "eval": (EvalConfig, run_eval, "evaluate an SAE (EV, L0, dead latents, per modality, CE recovered)"),
        "harvest": (HarvestConfig, lambda c: {"out": str(run_harvest(c))}, "cache a layer's activations"),
        "quickstart": (QuickstartConfig, run_quickstart, "offline end-to-end run on a tiny LM built locally"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttslens", description="Interpretability and control for TTS LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _fn, help_) in _commands().items():
        p = sub.add_parser(
            name,
            help=help_,
            description=(cls.__doc__ or help_).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_dataclass_args(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cls, fn, _ = _commands()[args.command]
    try:
        result = fn(from_args(cls, args))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"ttslens {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttslens {args.command}: interrupted (re-run with --resume to continue)", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the first process reports
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
