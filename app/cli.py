"""`ttslens` command line: each subcommand is one config dataclass and one package function."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ttslens.app.cli_args import add_dataclass_args, from_args
from ttslens.sae import notes
from ttslens.sae.errors import TTSLensError


def _commands():
    from ttslens.app.web import AppConfig, run_app
    from ttslens.audio.backbones.demo.build import DemoBuildConfig
    from ttslens.audio.backbones.registry import BackbonesConfig, run_backbones
    from ttslens.audio.commands import (
        QuickstartConfig,
        SynthesizeConfig,
        run_demo_build,
        run_quickstart,
        run_synthesize,
    )
    from ttslens.audio.harvest import run_boost, run_eval, run_harvest, run_match, train_sae
    from ttslens.audio.steering.evaluate import SteerEvalConfig, run_steer_eval
    from ttslens.audio.steering.presets import PresetConfig, run_presets
    from ttslens.audio.vectors import run_analyze as vectors_analyze
    from ttslens.audio.vectors import run_apply as vectors_apply
    from ttslens.audio.vectors import run_readout as vectors_readout
    from ttslens.audio.vectors import run_train as vectors_train
    from ttslens.audio.voices import VoicesConfig, run_voices
    from ttslens.autointerp.pipeline import LabelConfig, run_label
    from ttslens.sae.boost import BoostConfig
    from ttslens.sae.commands import (
        EvalConfig,
        HarvestConfig,
        TextQuickstartConfig,
        run_text_quickstart,
    )
    from ttslens.sae.flow import FlowConfig, run_flow
    from ttslens.sae.match import MatchConfig
    from ttslens.sae.stability import StabilityConfig, run_stability
    from ttslens.sae.training import TrainConfig
    from ttslens.sae.vectors.commands import AnalyzeConfig, ApplyConfig, ReadoutConfig
    from ttslens.sae.vectors.train import VectorConfig

    def do_train(cfg):
        res = train_sae(cfg)
        return {"out": str(res.path), **res.metrics}

    return {
        "train": (TrainConfig, do_train, "train an SAE on a model's residual stream (or a TTS backbone's)"),
        "eval": (EvalConfig, run_eval, "evaluate an SAE (EV, L0, dead latents, per modality, CE recovered)"),
        "harvest": (
            HarvestConfig,
            lambda c: {"out": str(run_harvest(c))},
            "cache a layer's activations (text LM or TTS backbone)",
        ),
        "match": (MatchConfig, run_match, "match SAE features across layers (SAE Match) and measure layer skipping"),
        "boost": (BoostConfig, run_boost, "teach a frozen SAE a new domain with a residual SAE (SAE Boost)"),
        "stability": (StabilityConfig, run_stability, "which features reappear across seeds; a pooled, stabler SAE"),
        "flow": (FlowConfig, run_flow, "trace a feature through layers: its residual / MLP / attention sources"),
        "vectors train": (VectorConfig, vectors_train, "train steering vectors: likelihood or online RL"),
        "vectors readout": (ReadoutConfig, vectors_readout, "logit lens and SAE view of steering vectors"),
        "vectors apply": (ApplyConfig, vectors_apply, "generate with trained steering vectors and without"),
        "vectors analyze": (AnalyzeConfig, vectors_analyze, "path patching, attention change, first-token effect"),
        "label": (LabelConfig, run_label, "label an SAE's features from text and audio evidence (resumable)"),
        "synthesize": (SynthesizeConfig, run_synthesize, "speak a text (optionally steered through SAE features)"),
        "presets": (PresetConfig, run_presets, "find an SAE's laughter / gender / rate steering features"),
        "steer-eval": (SteerEvalConfig, run_steer_eval, "dose-response of a steering preset or feature"),
        "app": (AppConfig, run_app, "the web app: synthesize & steer, feature browser, sweeps, text LLM"),
        "backbones": (BackbonesConfig, run_backbones, "list the TTS backbones: what each needs, usable or why not"),
        "voices": (VoicesConfig, run_voices, "list a backbone's named voices (--voice NAME)"),
        "demo build": (DemoBuildConfig, run_demo_build, "build the embedded demo TTS backbone from scratch"),
        "quickstart": (QuickstartConfig, run_quickstart, "offline end-to-end TTS loop on the embedded demo backbone"),
        "quickstart-text": (TextQuickstartConfig, run_text_quickstart, "offline SAE loop on a tiny text LM built here"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttslens", description="Interpretability and control for TTS LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (cls, _fn, help_) in _commands().items():
        where, leaf = sub, name
        if " " in name:  # "demo build": a command group
            group, leaf = name.split(" ", 1)
            if group not in groups:
                groups[group] = sub.add_parser(group, help=f"{group} commands").add_subparsers(
                    dest="subcommand", required=True
                )
            where = groups[group]
        p = where.add_parser(
            leaf,
            help=help_,
            description=(cls.__doc__ or help_).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_dataclass_args(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and argv is None:
        # a torchrun process whose work is done and saved: leave without the C++ static destructors, where
        # gloo's background threads have aborted finished runs (SIGABRT) under load
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = f"{args.command} {args.subcommand}" if getattr(args, "subcommand", None) else args.command
    cls, fn, _ = _commands()[name]
    try:
        result = fn(from_args(cls, args))
    except TTSLensError as e:  # the user's input or files: one line; anything else is a bug (traceback)
        print(f"ttslens {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttslens {name}: interrupted (re-run the same command to continue)", file=sys.stderr)
        return 130
    finally:
        for n in notes.drain():
            print(f"ttslens {name}: note: {n}", file=sys.stderr)
    if result is not None and os.environ.get("RANK", "0") == "0":  # under torchrun only the first process reports
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
