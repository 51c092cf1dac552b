"""Every flag of every ``lavida`` subcommand, fed an empty value, a negative value and a wrong type,
gives a one-line usage error (exit 2) and never a traceback (issue 27 item 4).

The flags are read from the parsers themselves (each command module's ``parse_args`` builds its
parser; ``--help`` is intercepted to capture it), so a new flag is swept without editing this file.
Nothing runs past argument checking: each module's ``parse_args`` is wrapped so that an accepted
command line stops with :class:`Accepted` instead of training or evaluating.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pytest

from evaluation import cli, throughput

#: valid required arguments per command (bench targets as "bench TARGET"); {tmp}: a scratch folder.
#: A positional comes first (the sweep replaces it when it sweeps the positional).
BASE_ARGS: dict[str, list[str]] = {
    "demo": [],
    "train": ["--env", "LaViDa/VisualMath-v0"],
    "eval": ["--policy", "random", "--env", "LaViDa/VisualMath-v0", "--out", "{tmp}/eval"],
    "leaderboard": ["{tmp}", "--out", "{tmp}/board.md"],
    "plot": ["{tmp}"],
    "ablate": [],
    "check-policy": ["diffusion"],
    "bench": ["rewards"],
    **{f"bench {target}": [] for target in throughput.TARGETS},
}
EMPTY, NEGATIVE, WRONG_TYPE = "", "-1", "abc"


class Accepted(Exception):
    """The command line passed every check (raised instead of running the command)."""


class Captured(Exception):
    """``--help`` reached: the parser is in ``parser``."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def command_modules() -> dict[str, object]:
    """``command -> module`` whose ``parse_args`` checks that command's arguments."""
    out = {name: importlib.import_module(module) for name, (module, _) in cli.COMMANDS.items()}
    out.update({f"bench {t}": importlib.import_module(m) for t, (m, _) in throughput.TARGETS.items()})
    return out


def capture_parser(module, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``module.parse_args`` builds (its ``--help`` intercepted)."""

    def grab(self, file=None):
        raise Captured(self)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "print_help", grab)
        with pytest.raises(Captured) as info:
            module.parse_args(["--help"])
    return info.value.parser


def value_kind(action: argparse.Action) -> str:
    """'flag' (takes no value), 'choice', 'bool', 'number' or 'text': which wrong values it can be fed."""
    if action.nargs == 0:
        return "flag"
    if action.choices:
        return "choice"
    if action.nargs == "?" and action.const is True:  # HfArgumentParser's bool fields: --flag [true|false]
        return "bool"
    if action.type in (int, float) or getattr(action.type, "number", False):
        return "number"
    return "text"


def bad_values(action: argparse.Action) -> list[list[str]]:
    """The wrong spellings to feed ``action`` (each an argv tail): empty, below its minimum, not its type."""
    flag = action.option_strings[0] if action.option_strings else None
    kind = value_kind(action)
    if kind == "flag":
        return [[f"{flag}={WRONG_TYPE}"]]
    negative = str(int(min(-1, getattr(action.type, "minimum", 0) - 1)))  # --core: -1 is documented, -2 is not
    values = [EMPTY, negative, WRONG_TYPE] if kind != "text" else [EMPTY]
    if getattr(action.type, "empty_ok", False):  # '' documented as empty/none (list fields, a cache dir)
        values.remove(EMPTY)
    return [[flag, v] if flag else [v] for v in values]


def call(command: str, argv: list[str], module, monkeypatch, capsys) -> tuple[object, str, str]:
    """Run ``lavida COMMAND argv`` in-process up to its checks: (exit code or Accepted, stdout, stderr)."""
    real = module.parse_args

    def checked(*args, **kwargs):
        real(*args, **kwargs)
        raise Accepted

    head = command.split()
    with monkeypatch.context() as m:
        m.setattr(module, "parse_args", checked)
        try:
            code: object = cli.main([*head, *argv])
        except SystemExit as exc:
            code = exc.code
        except Accepted:
            code = "accepted"
    out, err = capsys.readouterr()
    return code, out, err


def names_of(action: argparse.Action) -> list[str]:
    """The spellings an error about ``action`` may use."""
    return [*(o.lstrip("-") for o in action.option_strings), action.dest, str(action.metavar or action.dest)]


@pytest.fixture
def base(tmp_path, monkeypatch):
    """BASE_ARGS with {tmp} filled in, run from a scratch working directory; torch threads and
    $OMP_NUM_THREADS / $MKL_NUM_THREADS (set by the commands' thread defaults) restored after."""
    import torch

    monkeypatch.chdir(tmp_path)
    threads, env = torch.get_num_threads(), {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    yield {c: [a.replace("{tmp}", str(tmp_path)) for a in args] for c, args in BASE_ARGS.items()}
    torch.set_num_threads(threads)
    for var, value in env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def test_every_command_has_base_args_and_parse_args():
    """A new subcommand (or bench target) must join the sweep: base arguments and a parse_args."""
    modules = command_modules()
    assert set(modules) == set(BASE_ARGS)
    missing = [c for c, m in modules.items() if not callable(getattr(m, "parse_args", None))]
    assert not missing, f"commands without a module-level parse_args(argv) that main calls: {missing}"


@pytest.mark.parametrize("command", sorted(BASE_ARGS))
def test_base_args_pass_the_checks(command, base, monkeypatch, capsys):
    """The control: the base command line alone passes every check (so a sweep error is the flag's)."""
    code, out, err = call(command, base[command], command_modules()[command], monkeypatch, capsys)
    assert code == "accepted", (code, out, err)


@pytest.mark.parametrize("command", sorted(BASE_ARGS))
def test_bad_values_give_one_line_usage_errors(command, base, monkeypatch, capsys):
    """Empty, negative and wrong-type values of every flag: exit 2, one stderr line naming the flag."""
    module = command_modules()[command]
    parser = capture_parser(module, monkeypatch)
    failures, tried = [], 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or (not action.option_strings and command == "bench"):
            continue  # bench's TARGET positional: its choices are swept as 'bench TARGET' commands
        for tail in bad_values(action):
            tried += 1
            argv = [*base[command], *tail] if action.option_strings else [*tail, *base[command][1:]]
            code, out, err = call(command, argv, module, monkeypatch, capsys)
            lines = [line for line in err.splitlines() if line.strip()]
            problem = None
            if "Traceback" in out + err:
                problem = "traceback"
            elif code != 2:
                problem = f"exit {code!r}"
            elif len(lines) != 1:
                problem = f"{len(lines)} stderr lines"
            elif not any(name in lines[0] for name in names_of(action)):
                problem = "message does not name the flag"
            if problem:
                failures.append(f"{command} {' '.join(tail)!r}: {problem}: {(err or out).strip()[-300:]!r}")
    assert tried, f"no flags found for {command}"
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)
