"""The README's commands run as written.

Every ```bash block of README.md carries a mark on the line right before it:

    <!-- runnable -->          run here for real (bash, in a temporary directory), run lengths shrunk (tables below)
    <!-- not run: REASON -->   cannot run here: a server, the internet, a Ray cluster, a GPU, the whole suite
    <!-- set-up -->            the installs: CI made this environment through .ci/run, so they are compared with it

An unmarked bash block fails `test_every_bash_block_is_marked`. A runnable block's commands run one by one in a
temporary directory holding symlinks to agents/ and scripts/ (fire_rl is installed editable), so runs/ never lands in
the repository; each must exit 0, and what it should have written must exist. The only changes to a command are the
flag values of `AGENT_LENGTH`, `AGENT_IF_WRITTEN` and `SWEEP_IF_WRITTEN`; everything else runs as written.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"

# --- The substitution table: the only flags a runnable command gets changed. ---
# Every agent command (`python agents/<agent>.py ...`, and the agent flags of `scripts/ablate.py` after `--`) gets these
# run-length values: a written value is replaced, a missing flag appended (without them a command runs for days).
AGENT_LENGTH = {
    "--total-timesteps": "200",
    "--learning-starts": "100",
    "--buffer-size": "1000",
    "--batch-size": "32",
    "--metrics-every": "100",
    "--checkpoint-every": "0",
    "--eval-episodes": "1",
}
# Replaced where written, never appended (appending would change what the command does).
AGENT_IF_WRITTEN = {"--eval-every": "100"}
# scripts/ablate.py's grid, replaced where written: one replay ratio, one seed (env ids and methods as written).
SWEEP_IF_WRITTEN = {"--replay-ratios": ["0.25"], "--seeds": ["0"], "--branch-at": ["100"]}

MARK = re.compile(r"^<!--\s*(runnable|set-up|not run:\s*(?P<reason>\S.*?))\s*-->$")
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "<", "&", "(", ")"}
SCRIPT = re.compile(r"^(?:\./)?(agents|scripts)/(\w+)\.py$")


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence
    lang: str
    mark: str | None  # "runnable", "set-up", "not run", or None (unmarked)
    reason: str | None
    text: str


def code_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with the mark on the line before its fence (blank lines between
    are not allowed: the mark sits right before the block it marks)."""
    lines, blocks, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"^```\s*(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        above = MARK.match(lines[start - 1].strip()) if start > 0 else None
        mark = None if above is None else ("not run" if above.group("reason") else above.group(1))
        blocks.append(Block(start + 1, lang, mark, above and above.group("reason"), "\n".join(lines[start + 1 : i])))
        i += 1
    return blocks


def commands(block_text: str) -> list[list[str]]:
    """The block's commands, one per logical line (backslash continuations joined), comments dropped, shell
    punctuation (``&&``, ``;``, ``|``) split into tokens of its own."""
    out = []
    for line in block_text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        if tokens:
            out.append(tokens)
    return out


def script_of(tokens: list[str]) -> tuple[str, str, int] | None:
    """``(folder, name, index)`` of the first ``agents/X.py`` or ``scripts/X.py`` run by ``python``, else None."""
    for i, token in enumerate(tokens[1:], 1):
        if (m := SCRIPT.match(token)) and tokens[i - 1] in ("python", "python3"):
            return m.group(1), m.group(2), i
    return None


def set_flags(args: list[str], always: dict, if_written: dict) -> list[str]:
    """`args` with each flag of `always` set to its value (replaced, or appended when missing) and each flag of
    `if_written` replaced where it is written; list values replace all of a flag's values."""
    args = list(args)
    for flag, value in {**always, **if_written}.items():
        values = value if isinstance(value, list) else [value]
        hits = [i for i, a in enumerate(args) if a == flag or a.startswith(flag + "=")]
        assert len(hits) <= 1, f"{flag} written twice in {args}"
        if hits and "=" in args[hits[0]]:
            args[hits[0]] = f"{flag}={values[0]}"
        elif hits:
            i = end = hits[0] + 1
            if isinstance(value, list):  # a list flag: its values run to the next flag
                while end < len(args) and not args[end].startswith("-"):
                    end += 1
            else:
                end += 1
            args[i:end] = values
        elif flag in always:
            args += [flag, *values]
    return args


def shrink(tokens: list[str]) -> list[str]:
    """A runnable command with the substitution table applied (agents and ablate.py; anything else as written)."""
    found = script_of(tokens)
    if found is None or "--help" in tokens or "-h" in tokens:
        return tokens
    folder, name, i = found
    head, args = tokens[: i + 1], tokens[i + 1 :]
    if folder == "agents":
        return head + set_flags(args, AGENT_LENGTH, AGENT_IF_WRITTEN)
    if name == "ablate":
        cut = args.index("--") if "--" in args else len(args)
        grid, agent = args[:cut], args[cut + 1 :]
        return head + set_flags(grid, {}, SWEEP_IF_WRITTEN) + ["--"] + set_flags(agent, AGENT_LENGTH, AGENT_IF_WRITTEN)
    return tokens


def option(args: list[str], flag: str) -> str | None:
    """The value of `flag` in `args` (``--flag V`` or ``--flag=V``), None when absent."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def positionals(args: list[str], with_value: set[str]) -> list[str]:
    """The arguments that are no flag and no flag's value."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in with_value
        else:
            out.append(a)
    return out


BLOCKS = code_blocks(README)
RUNNABLE = [b for b in BLOCKS if b.lang == "bash" and b.mark == "runnable"]


def block_id(block: Block) -> str:
    first = commands(block.text)[0]
    found = script_of(first)
    return f"line{block.line}-" + (found[1] if found else first[0])


# ----------------------------------------------------------------------------------------------------------- marks
def test_every_bash_block_is_marked():
    bad = [
        f"README.md:{b.line}: ```{b.lang} block: use ```bash" for b in BLOCKS if b.lang in ("sh", "shell", "console")
    ]
    bad += [
        f"README.md:{b.line}: unmarked bash block; put <!-- runnable -->, <!-- not run: REASON --> or <!-- set-up --> "
        "on the line before it"
        for b in BLOCKS
        if b.lang == "bash" and b.mark is None
    ]
    assert not bad, "\n".join(bad)
    assert RUNNABLE, "README.md has no runnable block"
    ran = {script_of(c)[1] for b in RUNNABLE for c in commands(b.text) if script_of(c)}
    assert {"dqn_atari", "ablate", "aggregate", "plot"} <= ran, f"the main command and the sweep recipe must run: {ran}"


def test_runnable_commands_are_plain():
    """One command per line, no shell operators: each runs, and fails, on its own."""
    for block in RUNNABLE:
        for tokens in commands(block.text):
            assert not SHELL_OPERATORS & set(tokens), f"README.md:{block.line}: {shlex.join(tokens)}"
            assert script_of(tokens) or tokens[0] in ("python", "python3"), f"README.md:{block.line}: {tokens}"


def test_substitution_table():
    cmd = ["python", "agents/dqn_atari.py", "--reset", "fire", "--total-timesteps=100000", "--eval-every", "5000"]
    assert shrink(cmd) == [*cmd[:4], "--total-timesteps=200", "--eval-every", "100", "--learning-starts", "100",
                           "--buffer-size", "1000", "--batch-size", "32", "--metrics-every", "100",
                           "--checkpoint-every", "0", "--eval-episodes", "1"]  # fmt: skip
    sweep = shrink(shlex.split("python scripts/ablate.py --methods none fire --replay-ratios 0.25 1 4 --seeds 0 1 2 "
                               "--out o -- --total-timesteps 100000"))  # fmt: skip
    assert sweep[:12] == shlex.split(
        "python scripts/ablate.py --methods none fire --replay-ratios 0.25 --seeds 0 --out o --"
    )
    assert option(sweep[12:], "--total-timesteps") == "200" and "--eval-every" not in sweep


# ---------------------------------------------------------------------------------------------------------- set-up
def test_setup_block_does_what_ci_does():
    """The set-up block is not re-run (CI made this environment through .ci/run): each of its commands must be one
    .ci/run performs, and the torch pin the README names must be the one .ci/run installs."""
    ci = CI.read_text()
    setup = [b for b in BLOCKS if b.lang == "bash" and b.mark == "set-up"]
    assert setup, "README.md has no <!-- set-up --> block"
    ci_extras = set()
    for m in re.finditer(r'pip install [^\n]*-e "\.\[([^\]]*)\]"', ci):
        ci_extras |= set(m.group(1).split(","))
    for block in setup:
        for tokens in commands(block.text):
            parts, part = [], []
            for t in [*tokens, "&&"]:
                if t == "&&":
                    parts.append(part)
                    part = []
                else:
                    part.append(t)
            for cmd in filter(None, parts):
                text = " ".join(cmd)
                if cmd[:3] == ["python3", "-m", "venv"]:
                    assert f"python3 -m venv {cmd[3]}" in ci, text
                elif cmd[0] in (".", "source"):
                    assert f". {cmd[1]}" in ci, text
                elif cmd[:2] == ["pip", "install"] and "torch" in cmd:
                    assert re.search(r"pip install (-q )?torch", ci), f".ci/run installs no torch first ({text})"
                elif cmd[:3] == ["pip", "install", "-e"]:
                    extras = set(re.fullmatch(r"\.(?:\[(.*)\])?", cmd[3]).group(1).split(","))
                    assert extras <= ci_extras, f"{text}: .ci/run installs the extras {sorted(ci_extras)}"
                else:
                    raise AssertionError(f"README.md:{block.line}: set-up command not in .ci/run: {text}")
    ci_pin = re.search(r"torch==([\w.+]+)", ci).group(1)
    readme_pins = set(re.findall(r"torch==([\w.+]*\w)", README.read_text()))
    assert readme_pins == {ci_pin}, f"README names torch {readme_pins}, .ci/run installs torch=={ci_pin}"


def test_readme_test_command_is_the_one_ci_runs():
    runs = [shlex.join(c) for b in BLOCKS for c in commands(b.text) if c[:3] == ["python", "-m", "pytest"]]
    assert runs, "README.md gives no test command"
    for cmd in runs:
        assert cmd in CI.read_text(), f"README's test command {cmd!r} is not what .ci/run runs"


# ----------------------------------------------------------------------------------------------------- the commands
def environment(bin_dir: str) -> dict:
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
                SDL_VIDEODRIVER="dummy")  # fmt: skip


def expect_outputs(tokens: list[str], cwd: Path, results_before: int) -> None:
    """What a finished command must have left: a finished run, a sweep's runs, aggregate's tables, plot's PNGs."""
    found = script_of(tokens)
    if found is None or "--help" in tokens:
        return
    folder, name, i = found
    args = tokens[i + 1 :]
    cmd = shlex.join(tokens)
    if folder == "agents":
        assert len(list(cwd.glob("runs/**/result.json"))) == results_before + 1, f"no result.json after: {cmd}"
    elif name == "ablate":
        out = cwd / (option(args, "--out") or "runs/ablate-dqn_atari")
        assert (out / "attempts.jsonl").is_file() and list(out.glob("*/result.json")), f"no finished run: {cmd}"
    elif name == "aggregate":
        roots = positionals(args[: args.index("--") if "--" in args else len(args)], {"--out", "--metric"})
        out = cwd / (option(args, "--out") or f"{roots[0]}/aggregate")
        for table in ("summary.md", "aggregates.csv", "scores.csv", "curves.csv"):
            assert (out / table).is_file(), f"{out / table} missing after: {cmd}"
    elif name == "plot":
        agg = positionals(args, {"--out", "--metric", "--score", "--statistic", "--dpi", "--pre-window"})[0]
        out = cwd / (option(args, "--out") or f"{agg}/plots")
        assert list(out.glob("*.png")), f"no PNG in {out} after: {cmd}"


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=block_id)
def test_runnable_block_runs(block: Block, tmp_path: Path):
    for folder in ("agents", "scripts"):
        (tmp_path / folder).symlink_to(ROOT / folder, target_is_directory=True)
    env = environment(str(Path(sys.executable).parent))
    for tokens in commands(block.text):
        cmd = shrink(tokens)
        results = len(list(tmp_path.glob("runs/**/result.json")))
        proc = subprocess.run(["bash", "-c", shlex.join(cmd)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        output = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, f"README.md:{block.line}: {shlex.join(cmd)} exited {proc.returncode}\n{output}"
        expect_outputs(cmd, tmp_path, results)


# ------------------------------------------------------------------------------------------------ flags in the docs
@functools.cache
def help_text(script: str) -> str:
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="100"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def flags_of(script: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text(script)))


def test_documented_flags_exist():
    """Every flag the README and the docs pages give an agent or a script is one its --help lists."""
    bad = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for block in code_blocks(page):
            if block.lang != "bash":
                continue
            for tokens in commands(block.text):
                found = script_of(tokens)
                if found is None:
                    continue
                folder, name, i = found
                args = tokens[i + 1 :]
                end = next((j for j, t in enumerate(args) if t in SHELL_OPERATORS | {"do", "done"}), len(args))
                args = args[:end]
                script = f"{folder}/{name}.py"
                if not (ROOT / script).is_file():
                    bad.append(f"{page.name}:{block.line}: {script} does not exist")
                    continue
                if name == "ablate":
                    cut = args.index("--") if "--" in args else len(args)
                    agent = f"agents/{option(args[:cut], '--agent') or 'dqn_atari'}.py"
                    allowed = [(args[:cut], flags_of(script) | flags_of(agent)), (args[cut + 1 :], flags_of(agent))]
                else:
                    allowed = [(args, flags_of(script))]
                for part, known in allowed:
                    for a in part:
                        flag = a.split("=", 1)[0]
                        if re.fullmatch(r"--[a-z][a-z0-9-]*", flag) and flag not in known:
                            bad.append(f"{page.name}:{block.line}: {script} has no {flag}")
    assert not bad, "\n".join(bad)


def test_links_resolve():
    """Every relative link of the README, the docs pages and benchmarks/README.md names a file that exists."""
    bad = []
    for page in [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "script", ["scripts/ablate.py", "scripts/aggregate.py", "scripts/plot.py", "scripts/anatomy.py"]
)
def test_script_help_shows_each_default_once(script):
    text = help_text(script)
    usage = text.split("\n\n")[0]
    required = set(re.findall(r"(?<![\[\w-])(--[a-z][a-z0-9-]*)", usage))
    entries = re.split(r"\n(?=  -)", text.split("options:", 1)[1])
    checked = 0
    for entry in entries:
        header = entry.strip().split("  ")[0]
        names = re.findall(r"--[a-z][a-z0-9-]*", header)
        takes_value = bool(re.search(r"--[a-z][a-z0-9-]* [A-Z{]", header))
        assert entry.count("default") <= 1, f"{script}: a default shown twice:\n{entry}"
        if names and takes_value and not set(names) & required:
            assert "default" in entry, f"{script}: {names[0]} does not show its default:\n{entry}"
            checked += 1
    assert checked >= 4, f"{script}: only {checked} options checked"
