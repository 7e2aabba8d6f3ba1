"""Rule files that cannot hurt (issue 15, classes 6 and 7).

An alias bomb, 20,000 nested ``[``, a 10 MB message format and their neighbours are
refused with ``file:line`` by ``riskscore rules check`` and by hot reload alike, fast; a
refused file keeps the previous rule set, ``/readyz`` says why, a later valid file is
still picked up, and scoring is not slowed (the event loop is never blocked) meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.rules.packfile import MAX_NUMBER_CHARS, RuleLimits, compile_files
from service.rules.rulebook import check_directory, load_ruleset
from service.rules.ruleset import MAX_MESSAGE_CHARS, MAX_VALUE_CHARS, MessageTemplate
from service.settings import DEFAULT_RULES_DIR
from tests.reliability.conftest import RedisServer, Scenario, in_process_settings, payment
from training.cli import main

COMMON = (DEFAULT_RULES_DIR / "common.yaml").read_text()
LINE = re.compile(r"common\.yaml:(\d+): ")


def alias_bomb(levels: int = 9) -> str:
    """The common pack with a 'billion laughs' of nested anchors: 9**levels strings."""
    lines = ['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return COMMON.replace("pack: common\n", "pack: common\nx_bomb:\n" + "\n".join(lines) + "\n", 1)


def nested_brackets(depth: int = 20_000) -> str:
    return COMMON + "\nnested: " + "[" * depth + "]" * depth + "\n"


def huge_message() -> str:
    return COMMON.replace('message: "', 'message: "{amount_usd:>10000000}', 1)


HOSTILE = {
    "alias bomb": (alias_bomb(), "anchor &l0 is not allowed"),
    "20,000 nested [": (nested_brackets(), "nest"),  # ours at 33, or libyaml's own limit
    "40 nested [": (COMMON + "\nnested: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32"),
    "10 MB message format": (huge_message(), "format may only be"),
    "nested message field": (
        COMMON.replace('message: "', 'message: "{amount_usd:{card_attempts_10m}}', 1),
        "format may only be",
    ),
    "attribute in message": (
        COMMON.replace('message: "', 'message: "{amount_usd.real}', 1),
        "must name a feature or a param",
    ),
    "index in message": (
        COMMON.replace('message: "', 'message: "{amount_usd[0]}', 1),
        "must name a feature or a param",
    ),
    "conversion in message": (
        COMMON.replace('message: "', 'message: "{amount_usd!r}', 1),
        "must name a feature or a param",
    ),
    "precision 50": (
        COMMON.replace('message: "', 'message: "{amount_usd:.50f}', 1),
        "format may only be",
    ),
    "alias alone": (COMMON + "\nx: *nowhere\n", "alias *nowhere is not allowed"),
    "5,000-digit integer": (
        COMMON.replace("params:\n", "params:\n  huge: " + "9" * 5000 + "\n", 1),
        f"a number of more than {MAX_NUMBER_CHARS} characters",
    ),
}


# The time budgets below are those of a quiet machine. On a loaded one (CI: 2 shared cores)
# every step is slower, so a budget exceeded is checked again against the budget scaled by
# how much slower than REFERENCE_COMPILE_S the shipped rules compile here, now.
REFERENCE_COMPILE_S = 0.05  # the shipped rules' compile on a quiet machine takes less
# The compile's own time limit (RuleLimits.seconds) is raised past any budget here: a slow
# machine must not turn the refusal these tests expect into "compiling took longer".
NO_COMPILE_LIMIT_S = 120.0


def slowdown() -> float:
    """How much slower than a quiet machine this one runs now (1 at least).

    The median of three compiles of the shipped (valid) rules, against REFERENCE_COMPILE_S.
    """
    files = {p.name: p.read_bytes() for p in DEFAULT_RULES_DIR.glob("*.yaml")}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        compile_files(DEFAULT_RULES_DIR, files)
        times.append(time.perf_counter() - started)
    return max(1.0, statistics.median(times) / REFERENCE_COMPILE_S)


def within(elapsed: float, budget: float, pace: float | None = None) -> bool:
    """Whether ``elapsed`` s is within ``budget`` s of a quiet machine, scaled to this one.

    ``pace``: the slowdown measured already; else measured now, only when needed.
    """
    if elapsed < budget:
        return True
    return elapsed < budget * (slowdown() if pace is None else pace)


def rules_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_RULES_DIR, tmp_path / f"rules-{uuid.uuid4().hex[:6]}"))


def replace_common(rules: Path, text: str) -> None:
    """Write a new common.yaml whole (a rename, as deploy tools do): reloaded at once."""
    tmp = rules / ".common.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, rules / "common.yaml")


@pytest.mark.parametrize("variant", sorted(HOSTILE))
def test_rules_check_refuses_a_hostile_file_fast_with_its_line(
    variant: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RISKSCORE_RULES_RELOAD_TIMEOUT_SECONDS", str(NO_COMPILE_LIMIT_S))
    text, expected = HOSTILE[variant]
    rules = rules_copy(tmp_path)
    replace_common(rules, text)
    started = time.perf_counter()
    status = main(["rules", "check", str(rules)])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert status == 1
    assert expected in err, err
    assert "Traceback" not in err
    assert LINE.search(err), f"no file:line in {err!r}"
    assert within(elapsed, 1.0), f"{variant}: {elapsed:.2f} s"


def test_the_alias_bombs_line_is_the_first_anchor(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    replace_common(rules, alias_bomb())
    (problem,) = check_directory(rules)
    anchor_line = (
        alias_bomb()
        .splitlines()
        .index(next(line for line in alias_bomb().splitlines() if "&l0" in line))
    )
    assert problem.line == anchor_line + 1


def test_nesting_is_reported_at_the_line_it_goes_too_deep(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    text = nested_brackets()
    replace_common(rules, text)
    (problem,) = check_directory(rules)
    assert problem.line == text.count("\n", 0, text.index("[" * 20)) + 1


def test_file_size_and_rule_count_caps_name_their_setting(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    assert check_directory(rules, RuleLimits(max_file_bytes=len(COMMON.encode()) - 1))
    (big,) = check_directory(rules, RuleLimits(max_file_bytes=len(COMMON.encode()) - 1))
    assert "RISKSCORE_RULES_MAX_FILE_BYTES" in str(big) and "common.yaml" in str(big)
    total = len(load_ruleset(rules).rules)
    assert check_directory(rules, RuleLimits(max_rules=total)) == []
    (many,) = check_directory(rules, RuleLimits(max_rules=total - 1))
    assert "RISKSCORE_RULES_MAX_RULES" in str(many) and many.line is not None


SECTIONS = {  # a services.yaml whose sections grow quadratically in the compiler's care
    "14,000 merchants": ("merchants", "  m{i}: {{x: 1}}\n", 14_000, "more than 1000 entries"),
    "14,000 params": ("params", "  p{i}: 1\n", 14_000, "more than 100 entries"),
    "14,000 lists": ("lists", "  l{i}: [1]\n", 14_000, "more than 100 entries"),
    "30,000 bad overrides": (
        "merchants",
        "  m{i}: {{" + ", ".join(f"p{j}: 1" for j in range(100)) + "}}\n",
        300,
        "stopped after 200 problems",
    ),
}


@pytest.mark.parametrize("variant", sorted(SECTIONS))
def test_oversized_sections_are_refused_fast(variant: str, tmp_path: Path) -> None:
    key, entry, n, expected = SECTIONS[variant]
    rules = rules_copy(tmp_path)
    text = f"pack: services\n{key}:\n" + "".join(entry.format(i=i) for i in range(n))
    (rules / "services.yaml").write_text(text)
    started = time.perf_counter()
    problems = check_directory(rules, RuleLimits(seconds=NO_COMPILE_LIMIT_S))
    elapsed = time.perf_counter() - started
    assert any(expected in str(p) for p in problems), problems[-3:]
    assert len(problems) <= 201
    # it was 37 s; 0.5 s on a quiet machine
    assert within(elapsed, 5.0), f"{variant}: {elapsed:.2f} s"


def test_a_compile_past_its_time_limit_is_refused_not_waited_for(tmp_path: Path) -> None:
    files = {p.name: p.read_bytes() for p in DEFAULT_RULES_DIR.glob("*.yaml")}
    ruleset, errors = compile_files(tmp_path, files, RuleLimits(seconds=0.0))
    assert ruleset is None
    assert "took longer than 0 s" in str(errors[0])


# --- open-ended: any nesting, anchors and aliases; any message format ----------------------------


@st.composite
def yaml_trees(draw: st.DrawFn) -> str:
    """Flow-style YAML with random nesting, and anchors and aliases sprinkled in."""
    anchors: list[str] = []

    def node(depth: int) -> str:
        choice = draw(st.integers(0, 5 if depth < 60 else 1))
        if choice == 0:
            return draw(st.sampled_from(["1", "x", '"s"', "true", "[]", "{}"]))
        if choice == 1 and anchors:
            return "*" + draw(st.sampled_from(anchors))
        if choice == 2:
            name = f"a{len(anchors)}"
            anchors.append(name)
            return f"&{name} " + node(depth + 1)
        width = draw(st.integers(1, 3))
        items = [node(depth + 1) for _ in range(width)]
        if choice == 3:
            return "{" + ", ".join(f"k{i}: {v}" for i, v in enumerate(items)) + "}"
        return "[" + ", ".join(items) + "]"

    return COMMON + "\nx_tree: " + node(0) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=yaml_trees())
def test_any_nesting_or_alias_is_refused_fast_with_a_line_or_compiles(text: str) -> None:
    files = {p.name: p.read_bytes() for p in DEFAULT_RULES_DIR.glob("*.yaml")}
    files["common.yaml"] = text.encode()
    started = time.perf_counter()
    ruleset, errors = compile_files(
        DEFAULT_RULES_DIR, files, RuleLimits(seconds=NO_COMPILE_LIMIT_S)
    )
    elapsed = time.perf_counter() - started
    assert within(elapsed, 1.0), f"{elapsed:.2f} s"
    if "&" in text.split("x_tree:", 1)[1] or "*" in text.split("x_tree:", 1)[1]:
        assert ruleset is None
        assert all(e.line is not None for e in errors), errors
        assert any("not allowed" in e.detail for e in errors), errors
    else:  # plain nesting: refused past the depth limit (unknown key x_tree anyway), never raises
        assert ruleset is None and errors


FEATURE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5_000),
)


@settings(max_examples=300, deadline=None)
@given(
    spec=st.text(alphabet="<>^=+- #0123456789,_.eEfFgGdnxXob%{}[]!rsa:", max_size=12),
    value=FEATURE_VALUES,
)
def test_a_message_format_is_refused_or_renders_short(spec: str, value: object) -> None:
    text = "Amount {amount_usd:" + spec + "} over {amount_usd}"
    try:
        template = MessageTemplate.parse(text, {})
    except ValueError as e:
        assert "message" in str(e)
        return
    rendered = template.render({"amount_usd": value}, {})
    assert len(rendered) <= MAX_MESSAGE_CHARS + 2 * MAX_VALUE_CHARS


# --- hot reload in the service ---------------------------------------------------------------


class LoopWatch:
    """A heartbeat on the event loop: the longest gap between 5 ms ticks.

    ``worst``: the longest gap in wall-clock time (a loaded machine not running the process
    lengthens it too); ``worst_cpu``: the most CPU time the loop's own thread spent within
    one gap, which only work done on the loop (a compile that blocks it) lengthens.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(0.005)
            now, now_cpu = time.perf_counter(), time.thread_time()
            self.worst = max(self.worst, now - last - 0.005)
            self.worst_cpu = max(self.worst_cpu, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _p50_ms(scenario: Scenario, client: AsyncTestClient, n: int) -> tuple[float, set[str]]:
    times, versions = [], set()
    for _ in range(n):
        started = time.perf_counter()
        r = await scenario.score(client, payment(f"hr-{uuid.uuid4().hex[:12]}"))
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
        assert len(r.content) < 20_000
        versions.add(r.json()["ruleset_version"])
    return statistics.median(times), versions


async def _ready(scenario: Scenario, client: AsyncTestClient) -> dict:
    return (await scenario.send(client, "GET", "/readyz")).json()["rules"]


async def test_hostile_files_on_hot_reload_are_refused_and_never_slow_scoring(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    rules = rules_copy(tmp_path)
    old = load_ruleset(rules).version
    pace = slowdown()  # measured before the watch starts: it blocks the loop
    settings_ = in_process_settings(
        redis_server.url,
        tmp_path,
        rules_dir=rules,
        rules_reload_seconds=0.02,
        rules_reload_timeout_seconds=NO_COMPILE_LIMIT_S,
    )
    async with AsyncTestClient(app=create_app(settings_)) as client:
        await _p50_ms(scenario, client, 20)  # warm
        before, _ = await _p50_ms(scenario, client, 60)
        refused: dict[str, float] = {}
        with LoopWatch() as watch:
            for variant, (text, expected) in HOSTILE.items():
                replace_common(rules, text)
                started = time.perf_counter()
                while True:
                    state = await _ready(scenario, client)
                    if state["last_error"] and expected in state["last_error"]:
                        break
                    assert within(time.perf_counter() - started, 1.5, pace), f"{variant}: {state}"
                    await asyncio.sleep(0.01)
                refused[variant] = time.perf_counter() - started
                assert state["ok"] is False and state["version"] == old
                assert LINE.search(state["last_error"]), state
                during, versions = await _p50_ms(scenario, client, 15)
                assert versions == {old}
            # keep swapping hostile files while scoring: the loop never stalls on them
            swapper_done = asyncio.Event()

            async def swap() -> None:
                for i in range(30):
                    replace_common(rules, alias_bomb() if i % 2 else nested_brackets())
                    await asyncio.sleep(0.02)
                swapper_done.set()

            swapping = asyncio.create_task(swap())
            during, versions = await _p50_ms(scenario, client, 60)
            await swapping
        assert versions == {old}
        # the loop never worked a second on end (wall-clock gaps are reported, not asserted:
        # on a loaded machine the process is left unscheduled for more than that at times)
        blocked = watch.worst_cpu
        assert blocked < 1.0, f"event loop blocked for {blocked * 1000:.0f} ms of CPU"
        assert during < max(3 * before, before + 10), f"p50 {before:.1f} -> {during:.1f} ms"

        # a valid file afterwards is still picked up, and /readyz clears
        replace_common(rules, COMMON.replace("card_burst_10m: 6", "card_burst_10m: 7", 1))
        new = load_ruleset(rules).version
        started = time.perf_counter()
        while (state := await _ready(scenario, client))["version"] != new:
            assert within(time.perf_counter() - started, 3.0, pace), state
            await asyncio.sleep(0.02)
        assert state["ok"] is True and state["last_error"] is None
        _, versions = await _p50_ms(scenario, client, 5)
        assert versions == {new}
    slowest = max(refused, key=refused.__getitem__)
    scenario.expected = "refused < 1.5 s, p50 kept, loop free"
    scenario.found = (
        f"slowest {slowest} {refused[slowest] * 1000:.0f} ms, p50 {before:.1f}->{during:.1f} ms, "
        f"loop gap {watch.worst * 1000:.0f} ms ({blocked * 1000:.0f} ms CPU)"
    )
