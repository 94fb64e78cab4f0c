"""Issue 14, "Tests": a stateful property test of the ledger and the runner.

Hypothesis drives the real intake, ledger and runner (in-process pool, stub backend, memory
source and sink) through random sequences of: arrivals, new versions of a path, files sharing
a stem across folders and extensions, crashes (the runner is dropped, the ledger reopened and
``recover()``-ed, a new runner finishes interrupted plans — as ``App.start`` does), retries,
environment faults (the pool raises :class:`EnvironmentFault` until "fixed") and their fixes.

Invariants, after every step:

- no output folder has two owners, and no output file was written for two assets;
- nothing is quarantined or failed because of an environment fault.

And once everything is fixed and the queue has drained:

- every (source, path) has a visible record of its latest version (every input here is a good
  image, so that record is "done"), exactly one plan row per version and rule;
- every earlier version the daemon read has ended (done, or superseded with a reason) and
  was never quarantined: a re-export while queued is a new version, not a bad file.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from PIL import Image

from backends.base import ModelSpec, Request, Result
from daemon.config.profiles import Profile
from daemon.config.yamlfile import Positions
from daemon.errors import EnvironmentFault, InputChanged
from daemon.execution.inline_pool import InlinePool
from daemon.execution.runner import Runner
from daemon.intake.intake import Intake
from daemon.queue.ledger import Ledger
from daemon.rules.load import LoadedRule
from daemon.rules.match import RuleSet
from daemon.rules.schema import Rule
from daemon.sinks.memory import MemorySink
from daemon.sources.memory import MemorySource
from daemon.types import JobState, PlanState

PROFILES = {"stub": Profile(name="stub", task="stub", model="stub", max_side=64)}
FOLDERS = ("a", "b", "c/d")
STEMS = ("hero", "shot")
EXTENSIONS = ("png", "jpg", "tif")
ENV_MARK = "ENVFAULT-7f3a"  # in every environment fault's message, to spot it anywhere


def image_bytes(ext: str, shade: int) -> bytes:
    """A small image whose bytes depend on ``shade`` (a new version of a path is a new
    shade)."""
    image = Image.new("RGB", (48, 40), (shade % 256, (shade * 7) % 256, 90))
    image.putpixel((shade % 48, 0), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, {"jpg": "JPEG", "tif": "TIFF"}.get(ext, "PNG"))
    return buffer.getvalue()


def ruleset() -> RuleSet:
    """One rule with the default output template (the one users get)."""
    rule_ = Rule.model_validate(
        {
            "name": "r",
            "match": {"source": "mem", "include": ["**/*.png", "**/*.jpg", "**/*.tif"]},
            "prompt": "{stem}",
            "steps": [{"name": "one", "model": "stub", "variants": 2, "seed": 3}],
            "output": {"sink": "out"},
        }
    )
    return RuleSet([LoadedRule(rule_, None, Positions("r.yaml"))])


class VerifyingMemorySource(MemorySource):
    """The memory source with the folder source's quarantine contract: only the bytes that
    failed are put aside; a newer version at that name raises InputChanged."""

    def quarantine(self, key: str, record: dict[str, Any], folder: str | None = None) -> str:
        try:
            current = hashlib.sha256(self.read(key)).hexdigest()
        except Exception:
            current = None
        if record.get("sha256") and current != record["sha256"]:
            raise InputChanged(f"{key}: a newer version replaced the bytes that failed")
        return super().quarantine(key, record, folder)


class FaultyPool(InlinePool):
    """The in-process pool, with an environment that can break: while ``broken``, every
    call raises the environment-fault class (a missing API key, say) until it is fixed."""

    broken = False

    def run(self, spec: ModelSpec, request: Request, **kwargs: Any) -> Result:
        if self.broken:
            raise EnvironmentFault(
                f"{ENV_MARK}: the provider's API key is not set", hint="set it and reload"
            )
        return super().run(spec, request, **kwargs)


class Clock:
    """The ledger's clock: held jobs' backoff passes when the test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class LedgerAndRunner(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="darkroom-trust-"))
        self.clock = Clock()
        self.rules = ruleset()
        self.source = VerifyingMemorySource("mem")
        self.sink = MemorySink("out")
        self.pool = FaultyPool(self.root / "models")
        self.arrived: dict[str, list[str]] = {}  # key -> sha256 of each version, in order
        self.shade = 0
        self.ledger: Ledger
        self.runner: Runner
        self.intake: Intake
        self._open()

    # -- the daemon's parts, as App.start assembles them ---------------------------------

    def _open(self) -> None:
        self.ledger = Ledger(
            self.root / "ledger.sqlite",
            max_attempts=3,
            retry_backoff=0,
            clock=self.clock,
            hold_backoff=5.0,
            hold_backoff_max=60.0,
        )
        self.ledger.recover()
        self.runner = Runner(
            self.ledger, {"mem": self.source}, {"out": self.sink}, self.pool, PROFILES, "cpu"
        )
        for plan_id in self.ledger.unfinished_plans():
            self.runner.finalize(plan_id)
        self.intake = Intake(
            self.ledger, lambda: self.rules, {"mem": self.source}, self.runner.wake.set
        )
        # A restart: the source's startup scan offers whatever the ledger does not know.
        self.source.stop()
        self.source.start(self.intake.emit, self.intake.known_for("mem"))

    def _drain_intake(self) -> None:
        while not self.intake.queue.empty():
            arrival = self.intake.queue.get()
            if arrival is not None:
                self.intake.handle(arrival)

    def teardown(self) -> None:
        try:
            self.ledger.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- what happens to the daemon ------------------------------------------------------

    @rule(
        folder=st.sampled_from(FOLDERS),
        stem=st.sampled_from(STEMS),
        ext=st.sampled_from(EXTENSIONS),
    )
    def arrive(self, folder: str, stem: str, ext: str) -> None:
        """A file lands: a new path, or a new version of a path already seen (same stem in
        other folders and extensions share the default output's {stem})."""
        key = f"{folder}/{stem}.{ext}"
        self.shade += 1
        data = image_bytes(ext, self.shade)
        self.arrived.setdefault(key, []).append(hashlib.sha256(data).hexdigest())
        self.source.put(key, data)

    @rule()
    def intake_runs(self) -> None:
        self._drain_intake()

    @rule(steps=st.integers(min_value=1, max_value=4))
    def runner_runs(self, steps: int) -> None:
        self._drain_intake()
        for _ in range(steps):
            if not self.runner.step():
                break

    @rule(claimed_ahead=st.booleans())
    def crash(self, claimed_ahead: bool) -> None:
        """kill -9: queued arrivals in memory are lost, a job claimed ahead of the worker is
        left 'running'; the next start recovers and rescans."""
        if claimed_ahead:
            self.ledger.claim("the-dead-daemon")
        self.ledger.close()
        self._open()

    @precondition(lambda self: not self.pool.broken)
    @rule()
    def environment_breaks(self) -> None:
        self.pool.broken = True

    @precondition(lambda self: self.pool.broken)
    @rule(reload=st.booleans())
    def environment_fixed(self, reload: bool) -> None:
        """The operator sets the key: with a reload (or ``darkroom retry --held``) held jobs
        resume at once; without, at their next backoff."""
        self.pool.broken = False
        if reload:
            self.ledger.resume_held(everything=True)

    @rule(seconds=st.sampled_from((1.0, 10.0, 120.0)))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def operator_retries(self) -> None:
        self.ledger.retry()

    # -- invariants ----------------------------------------------------------------------

    def _assets_by_output(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """Output path -> assets whose jobs recorded it; folder -> assets writing into it."""
        by_path: dict[str, set[str]] = {}
        by_folder: dict[str, set[str]] = {}
        for row in self.ledger.plans():
            asset = f"{row.source}:{row.key}"
            for job in self.ledger.jobs_of(row.id):
                for output in job.outputs:
                    by_path.setdefault(output.path, set()).add(asset)
                    folder = str(PurePosixPath(output.path).parent)
                    by_folder.setdefault(folder, set()).add(asset)
        return by_path, by_folder

    @invariant()
    def no_output_has_two_owners(self) -> None:
        by_path, by_folder = self._assets_by_output()
        shared_files = {p: a for p, a in by_path.items() if len(a) > 1}
        assert not shared_files, f"output files written for several inputs: {shared_files}"
        shared = {f: a for f, a in by_folder.items() if len(a) > 1}
        assert not shared, f"output folders with several owners: {shared}"

    @invariant()
    def environment_faults_never_blame_the_input(self) -> None:
        assert not self.source.quarantined, (
            f"good inputs quarantined: {sorted(self.source.quarantined)}"
        )
        records = self.ledger.quarantined()
        for record in records:
            assert ENV_MARK not in str(record), f"quarantined for an environment fault: {record}"
        assert not records, f"the ledger records good inputs as quarantined: {records}"
        for row in self.ledger.plans():
            for job in self.ledger.jobs_of(row.id):
                if job.state == JobState.FAILED:
                    assert ENV_MARK not in (job.error or ""), (
                        f"{row.key} failed for an environment fault: {job.error}"
                    )
                if job.state == JobState.HELD:
                    assert job.error, f"{row.key}: held without a reason"

    # -- the end: fix everything, let it drain, and look at every input -------------------

    def check_final_records(self) -> None:
        self.pool.broken = False
        self.ledger.resume_held(everything=True)
        self.clock.now += 3600
        for _ in range(400):
            self._drain_intake()
            if not self.runner.step() and self.intake.queue.empty():
                break
        self.runner.finalize_ended()
        for key, versions in self.arrived.items():
            plans = [p for p in self.ledger.plans() if p.source == "mem" and p.key == key]
            latest = versions[-1]
            latest_plans = [p for p in plans if p.sha256 == latest]
            assert len(latest_plans) == 1, (
                f"{key}: want one plan for its latest version, got "
                f"{[(p.sha256[:8], p.state) for p in latest_plans]}"
            )
            assert latest_plans[0].state == PlanState.DONE, (
                f"{key}: latest version ended {latest_plans[0].state}, "
                f"jobs {[(j.state, j.error) for j in self.ledger.jobs_of(latest_plans[0].id)]}"
            )
            for sha in set(versions[:-1]):
                older = [p for p in plans if p.sha256 == sha]
                assert len(older) <= 1, f"{key}: version {sha[:8]} has {len(older)} plans"
                assert all(p.state != PlanState.ACTIVE for p in older), (
                    f"{key}: an earlier version never ended: {[p.state for p in older]}"
                )
        self.no_output_has_two_owners()
        self.environment_faults_never_blame_the_input()


class FinalChecked(LedgerAndRunner):
    def teardown(self) -> None:
        try:
            self.check_final_records()
        finally:
            super().teardown()


TestLedgerInvariants = FinalChecked.TestCase
TestLedgerInvariants.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    # No shrinking: on a failure it can take minutes here; the failing steps are printed as
    # they are. Shrink locally with phases=list(Phase) when a case needs minimising.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
