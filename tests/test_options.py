"""ecot.options: argparse flags generated from config dataclasses, and the dataclass built back."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from ecot.errors import UsageError
from ecot.options import DefaultsHelpFormatter, Parser, add_later, add_options, build, option

COLOURS = ("red", "green", "blue")  # a source-of-truth constant, as RECIPES is for `ecot train`


@dataclass
class Inner:
    rank: int = option(32, "adapter rank")
    scale: float = 1.0  # no metadata: still a flag (--inner-scale)
    secret: str = option("s", cli=False)


@dataclass
class Toy:
    data: str = option(help="input directory", group="run")  # no default: a required flag
    steps: int = option(10, "optimizer steps", group="run")
    lr: float = option(0.5, "learning rate (100% = 1.0)")
    colour: str = option("red", "paint", choices=COLOURS)
    mode: Literal["fast", "slow"] = option("fast", "how")
    limit: int | None = option(None, "first N only")
    name: str | None = None
    augment: bool = option(False, "augment images")
    progress: bool = option(True, "hide the progress bar")  # --no-progress
    out_dir: str = option("out", "output", flag="--out")
    extra: dict[str, Any] = option(default_factory=dict, cli=False)
    inner: Inner = option(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UsageError(f"steps must be at least 1, got {self.steps}")
        if self.inner.rank < 1:
            raise ValueError(f"rank must be positive, got {self.inner.rank}; out_dir and max_things unchanged")


def _parser(cls=Toy, **kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, cls, **kwargs)
    return p


def test_defaults_round_trip_to_the_dataclass():
    args = _parser().parse_args(["--data", "d"])
    assert build(Toy, args) == Toy(data="d")


def test_types_choices_and_switches():
    argv = ["--data", "d", "--steps", "3", "--lr", "0.25", "--colour", "blue", "--mode", "slow", "--limit", "4",
            "--name", "n", "--augment", "--no-progress", "--out", "o", "--inner-rank", "8", "--inner-scale", "2"]
    toy = build(Toy, _parser().parse_args(argv))
    assert toy == Toy(data="d", steps=3, lr=0.25, colour="blue", mode="slow", limit=4, name="n", augment=True,
                      progress=False, out_dir="o", inner=Inner(rank=8, scale=2.0))
    assert type(toy.steps) is int and type(toy.lr) is float and type(toy.inner.scale) is float


def test_namespace_attributes_are_the_flag_names():
    args = _parser().parse_args(["--data", "d"])
    assert {"no_progress", "out", "inner_rank", "augment"} <= set(vars(args))
    assert "progress" not in vars(args) and "secret" not in vars(args) and "extra" not in vars(args)


@pytest.mark.parametrize("argv, flag", [
    (["--steps", "x"], "--steps"),
    (["--lr", "fast"], "--lr"),
    (["--colour", "pink"], "--colour"),
    (["--mode", "medium"], "--mode"),
    ([], "--data"),  # the required flag is missing
])
def test_bad_values_are_usage_errors_naming_the_flag(argv, flag, capsys):
    argv = argv if argv == [] or "--data" in argv else ["--data", "d", *argv]
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_help_has_the_metadata_text_choices_and_groups():
    text = _parser().format_help()
    for piece in ("optimizer steps", "learning rate (100% = 1.0)", "{red,green,blue}", "{fast,slow}",
                  "--no-progress", "hide the progress bar", "--inner-rank", "adapter rank", "run:"):
        assert piece in text, piece
    assert "--progress" not in text and "--secret" not in text and "--extra" not in text
    run_group = text.split("run:")[1]
    assert "--data" in run_group and "--steps" in run_group and "--colour" not in run_group


def test_only_and_group_lay_out_flags_and_later_calls_add_the_rest():
    p = argparse.ArgumentParser()
    add_options(p, Toy, only=["colour", "data"])
    p.add_argument("--handwritten")
    add_options(p, Toy, group="run")
    add_options(p, Toy)
    flags = [a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"]
    assert flags[:4] == ["--colour", "--data", "--handwritten", "--steps"]
    assert len(flags) == len(set(flags)) == 13
    with pytest.raises(ValueError, match="no command-line fields"):
        add_options(argparse.ArgumentParser(), Toy, only=["nope"])


def test_overrides_change_the_command_line_only():
    p = _parser(overrides={"lr": {"default": None, "help": "resolved later"}})
    args = p.parse_args(["--data", "d"])
    assert args.lr is None and "resolved later" in p.format_help()
    assert build(Toy, args, lr=0.1).lr == 0.1  # the caller resolves it
    with pytest.raises(ValueError, match="nope"):
        _parser(overrides={"nope": {}})


def test_positional_and_required_settings():
    @dataclass
    class Run:
        dataset_dir: str = option(help="dataset", positional=True, metavar="DATASET_DIR")
        policy: str = option("expert", "who acts", required=True)  # the library default stays

    p = _parser(Run)
    assert "DATASET_DIR" in p.format_usage() and "--policy POLICY" in p.format_usage()
    assert build(Run, p.parse_args(["ds", "--policy", "p"])) == Run("ds", "p")
    assert Run("ds").policy == "expert"


def test_config_checks_become_usage_errors_naming_flags():
    p = _parser()
    with pytest.raises(UsageError, match=r"^--steps must be at least 1, got 0$"):
        build(Toy, p.parse_args(["--data", "d", "--steps", "0"]))
    # a plain ValueError too; names with an underscore are replaced anywhere, one-word names only first
    with pytest.raises(UsageError) as err:
        build(Toy, p.parse_args(["--data", "d", "--inner-rank", "0"]))
    assert str(err.value) == "--inner-rank must be positive, got 0; --out and max_things unchanged"


def test_types_without_a_command_line_form_are_refused():
    @dataclass
    class Bad:
        pairs: tuple[int, int] = (1, 2)

    with pytest.raises(TypeError, match=r"Bad\.pairs.*cli=False"):
        _parser(Bad)

    @dataclass
    class Unset:
        flag: bool = option(None)

    with pytest.raises(TypeError, match="True or False default"):
        _parser(Unset)


def test_deferred_flags_are_added_on_first_use():
    calls = []
    p = Parser(prog="x")

    def add(parser):
        calls.append(1)
        add_options(parser, Toy)

    add_later(p, add)
    assert calls == []
    assert "optimizer steps" in p.format_help() and calls == [1]
    assert build(Toy, p.parse_args(["--data", "d"])) == Toy(data="d") and calls == [1]

    plain = argparse.ArgumentParser()
    add_later(plain, add)  # a plain parser gets them at once
    assert calls == [1, 1]


def test_defaults_formatter_shows_real_defaults_only():
    p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    add_options(p, Toy)
    text = " ".join(p.format_help().split())
    assert "optimizer steps (default 10)" in text and "paint (default red)" in text
    assert "first N only (default" not in text and "augment images (default" not in text
    assert "input directory (default" not in text  # required


def test_ecot_help_imports_no_config_module():
    code = ("import sys; from ecot.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ecot.train.trainer', 'ecot.annotate.runner', 'ecot.eval.sim') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _parse(argv):
    from ecot.cli import build_parser

    return build_parser().parse_args(argv)


def test_ecot_train_defaults_are_the_dataclass_defaults(tmp_path):
    from ecot.train.cli import TINY_LR, run_config_from_args
    from ecot.train.recipes import RunConfig
    from ecot.train.trainer import TrainConfig

    run = run_config_from_args(_parse(["train", "--data", "d", "--out", str(tmp_path)]))
    assert run == RunConfig(data="d", out=str(tmp_path), train=TrainConfig(lr=TINY_LR))
    run = run_config_from_args(_parse(["train", "--data", "d", "--out", "o", "--lora-rank", "4", "--no-tensorboard",
                                       "--seed", "3", "--join", "original", "--lr", "0.01"]))
    assert (run.train.lora.rank, run.train.tensorboard, run.train.seed, run.join, run.train.lr) == (4, False, 3, "original", 0.01)


def test_ecot_annotate_and_eval_defaults_are_the_dataclass_defaults():
    from ecot.annotate.runner import RunConfig
    from ecot.eval.sim import EvalConfig

    assert build(RunConfig, _parse(["annotate", "ds", "--out", "o"])) == RunConfig("ds", "o")
    assert build(EvalConfig, _parse(["eval", "--policy", "expert", "--out", "o"])) == EvalConfig(out="o")


def test_ecot_sim_collect_and_policy_bench_defaults_are_the_dataclass_defaults():
    from ecot.policy.cli import BenchOptions
    from ecot.policy.policy import PolicyConfig
    from ecot.sim.collect import CollectConfig

    # --episodes is required on the command line; the library default (100) is for callers of collect().
    assert build(CollectConfig, _parse(["sim", "collect", "--episodes", "100", "--out", "o"])) == CollectConfig()
    args = _parse(["sim", "collect", "--episodes", "2", "--out", "o", "--name", "mine", "--split", "heldout",
                   "--stop-at-success", "--video", "--num-objects", "3", "--no-progress"])
    assert build(CollectConfig, args) == CollectConfig(episodes=2, dataset_name="mine", split="heldout",
                                                       stop_at_success=True, video=True, num_objects=3)
    assert (args.out, args.no_progress) == ("o", True)  # the two flags that are not CollectConfig's
    args = _parse(["policy", "bench", "ckpt"])
    assert build(BenchOptions, args) == BenchOptions("ckpt")
    assert build(PolicyConfig, args) == PolicyConfig()
    args = _parse(["policy", "bench", "ckpt", "--reuse-steps", "3", "--modes", "full,reuse", "--no-baseline"])
    assert build(PolicyConfig, args).reuse_steps == 3
    assert build(BenchOptions, args) == BenchOptions("ckpt", modes="full,reuse", no_baseline=True)


def test_ecot_policy_bench_help_comes_from_the_dataclasses(capsys):
    from ecot.options import _specs
    from ecot.policy.cli import BenchOptions
    from ecot.policy.policy import PolicyConfig

    with pytest.raises(SystemExit):
        _parse(["policy", "bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    specs = [spec for _, spec in _specs(BenchOptions)] + [s for name, s in _specs(PolicyConfig) if name == "reuse_steps"]
    assert len(specs) == 10
    for spec in specs:
        assert spec.flag in text
        assert " ".join(spec.kwargs["help"].split()) in text, spec.flag
    assert "(default 5)" in text and "(default 10)" in text  # PolicyConfig.reuse_steps, BenchOptions.steps


@pytest.mark.parametrize("command, config", [
    (["train"], "ecot.train.recipes:RunConfig"),
    (["annotate"], "ecot.annotate.runner:RunConfig"),
    (["eval"], "ecot.eval.sim:EvalConfig"),
    (["sim", "collect"], "ecot.sim.collect:CollectConfig"),
])
def test_every_documented_field_is_in_the_help(command, config, capsys):
    import importlib

    from ecot.options import _specs

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit):
        _parse([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    specs = [spec for _, spec in _specs(cls)]
    assert len(specs) >= 10
    for spec in specs:
        assert (spec.flag if not spec.positional else spec.kwargs.get("metavar", spec.flag)) in text
        if spec.kwargs.get("help") and spec.dest != "lr":
            assert " ".join(spec.kwargs["help"].replace("%%", "%").split()) in text, spec.flag
