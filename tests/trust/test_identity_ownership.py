"""Issue 14, items 1, 2 and 6: every asset gets its own outputs and record; a new version is a
new round whose manifest describes it (S3 too); the manifest is written after the page and
before the index, and a restart finishes an interrupted publish; the root index keeps every
writer's entry; ``darkroom check`` warns about output templates that can collide.

The runner runs in-process (stub backend, memory source) against memory, folder and S3 (moto)
sinks. A crash is simulated by making a fault point raise where the daemon would SIGKILL
itself, then building a new runner over the same ledger and sink, as a restart does.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from daemon import faults
from daemon.config.profiles import Profile
from daemon.config.yamlfile import Positions
from daemon.execution.inline_pool import InlinePool
from daemon.execution.runner import Runner
from daemon.intake.intake import Intake
from daemon.outputs.index import INDEX_JSON, IndexEntry, load_index, update_index
from daemon.outputs.manifest import parse_manifest
from daemon.queue.ledger import Ledger
from daemon.rules.load import LoadedRule
from daemon.rules.match import RuleSet
from daemon.rules.schema import Rule
from daemon.sinks.base import Sink
from daemon.sinks.folder import FolderSink
from daemon.sinks.memory import MemorySink
from daemon.sources.memory import MemorySource
from tests.s3.conftest import bucket, moto_endpoint, s3  # noqa: F401  (fixtures)

PROFILES = {"stub": Profile(name="stub", task="stub", model="stub", max_side=64)}


def image(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, fmt)
    return buffer.getvalue()


def rules(**output: Any) -> RuleSet:
    rule = Rule.model_validate(
        {
            "name": "r",
            "match": {"source": "mem", "include": ["**/*"]},
            "prompt": "{stem} for {folder}",
            "steps": [{"name": "one", "model": "stub", "variants": 2, "seed": 3}],
            "output": {"sink": "out", **output},
        }
    )
    return RuleSet([LoadedRule(rule, None, Positions("r.yaml"))])


class Daemon:
    """The pipeline of one daemon process: ledger, intake, runner over one source and sink."""

    def __init__(self, state: Path, source: MemorySource, sink: Sink, ruleset: RuleSet) -> None:
        self.ledger = Ledger(state / "ledger.sqlite", max_attempts=3, retry_backoff=0)
        self.source, self.sink = source, sink
        pool = InlinePool(state / "models")
        self.runner = Runner(self.ledger, {"mem": source}, {"out": sink}, pool, PROFILES, "cpu")
        self.intake = Intake(self.ledger, lambda: ruleset, {"mem": source}, self.runner.wake.set)
        # What App.start does before intake: close the plans a crash left open.
        for plan_id in self.ledger.unfinished_plans():
            self.runner.finalize(plan_id)

    def put(self, key: str, data: bytes) -> None:
        self.intake.handle(self.source.put(key, data))

    def drain(self, limit: int = 400) -> None:
        for _ in range(limit):
            if not self.runner.step():
                return

    def manifests(self) -> dict[str, dict[str, Any]]:
        return {
            path: json.loads(self.sink.read(path))
            for path in self.sink.list("")
            if path.endswith("manifest.json") and "/rounds/" not in path
        }


@pytest.fixture
def memory_daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, MemorySource("mem"), MemorySink("out"), rules())
    yield daemon
    daemon.ledger.close()


def assert_outputs_intact(sink: Sink, manifest: dict[str, Any]) -> None:
    """Every output the manifest lists is there with the bytes it recorded (none overwritten)."""
    for step in manifest["steps"]:
        for output in step["outputs"]:
            data = sink.read(output["path"])
            assert hashlib.sha256(data).hexdigest() == output["sha256"], output["path"]


# -- item 1: same stem, many folders and extensions -------------------------------------------

FOLDERS = ["", "campaign-a", "campaign-b", "campaign-a/deep"]
FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("tif", "TIFF"), ("bmp", "BMP")]
FORMATS += [("gif", "GIF"), ("PNG", "PNG")]  # hero.PNG and hero.png: two files on Linux


def test_28_files_of_one_stem_get_28_output_folders_none_overwritten(memory_daemon):
    keys = []
    for i, folder in enumerate(FOLDERS):
        for j, (ext, fmt) in enumerate(FORMATS):
            key = f"{folder}/hero.{ext}".lstrip("/")
            memory_daemon.put(key, image((i * 60, j * 30, 99), fmt))
            keys.append(key)
    memory_daemon.drain()

    manifests = memory_daemon.manifests()
    assert len(keys) == 28
    assert len(manifests) == 28, sorted(manifests)
    assert sorted(m["source"]["key"] for m in manifests.values()) == sorted(keys)
    for path, manifest in manifests.items():
        assert manifest["status"] == "done", path
        assert_outputs_intact(memory_daemon.sink, manifest)
        # Readable: the folder says which file it is for.
        key = manifest["source"]["key"]
        assert Path(key).stem in path and Path(key).suffix.lower().lstrip(".") in path
    by_key = {m["source"]["key"]: path for path, m in manifests.items()}
    assert by_key["campaign-a/deep/hero.jpg"] == "r/campaign-a/deep/hero.jpg/manifest.json"
    assert by_key["hero.png"] == "r/hero.png/manifest.json"
    # hero.PNG asks for the folder hero.png owns: placed beside it, and the manifest says so.
    placed = manifests[by_key["hero.PNG"]]
    assert by_key["hero.PNG"].startswith("r/hero.png-")
    assert placed["placed"]["requested"] == "r/hero.png"
    assert "hero.png" in placed["placed"]["reason"]
    assert "placed" not in manifests[by_key["hero.png"]]


def test_a_colliding_custom_template_places_the_second_input_beside_the_first(memory_daemon):
    daemon = Daemon(
        memory_daemon.ledger.path.parent / "custom",
        MemorySource("mem"),
        MemorySink("out"),
        rules(path="{rule}/{stem}/{step}-{variant}.{ext}"),
    )
    daemon.put("a/hero.png", image((200, 0, 0)))
    daemon.drain()
    daemon.put("b/hero.png", image((0, 200, 0)))
    daemon.drain()
    manifests = daemon.manifests()
    first = manifests["r/hero/manifest.json"]
    assert first["source"]["key"] == "a/hero.png"
    assert_outputs_intact(daemon.sink, first)
    [second_path] = [p for p in manifests if p != "r/hero/manifest.json"]
    second = manifests[second_path]
    assert second["source"]["key"] == "b/hero.png"
    assert second_path.startswith("r/hero-") and second["placed"]["requested"] == "r/hero"
    assert all(o["path"].startswith(second_path[: -len("manifest.json")]) for o in _outs(second))
    assert_outputs_intact(daemon.sink, second)
    # A new version of the first input is a new round of its own folder, not a placement.
    daemon.put("a/hero.png", image((250, 250, 0)))
    daemon.drain()
    again = daemon.manifests()["r/hero/manifest.json"]
    assert again["source"]["key"] == "a/hero.png" and "placed" not in again
    assert [r["round"] for r in again["rounds"]] == [1]
    assert_outputs_intact(daemon.sink, again)
    assert daemon.ledger.owner_of("out", "r/hero") == ("mem", "a/hero.png")
    daemon.ledger.close()


def _outs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for s in manifest["steps"] for o in s["outputs"]]


# -- item 6: copies ----------------------------------------------------------------------------


def test_the_same_bytes_in_two_folders_get_two_records_and_two_output_sets(memory_daemon):
    same = image((10, 20, 30))
    memory_daemon.put("campaign-a/hero.png", same)
    memory_daemon.put("campaign-b/hero.png", same)
    memory_daemon.drain()

    plans = memory_daemon.ledger.plans()
    assert sorted(p.key for p in plans) == ["campaign-a/hero.png", "campaign-b/hero.png"]
    assert len(memory_daemon.ledger.jobs()) == 2  # both visible in `darkroom jobs ls`
    manifests = memory_daemon.manifests()
    assert set(manifests) == {
        "r/campaign-a/hero.png/manifest.json",
        "r/campaign-b/hero.png/manifest.json",
    }
    prompts = {m["source"]["key"]: m["rule"]["prompt"] for m in manifests.values()}
    assert prompts == {
        "campaign-a/hero.png": "hero for campaign-a",
        "campaign-b/hero.png": "hero for campaign-b",
    }
    # Same path + same bytes + same rule: never run again.
    memory_daemon.put("campaign-a/hero.png", same)
    memory_daemon.drain()
    assert len(memory_daemon.ledger.plans()) == 2


def test_an_older_ledgers_plan_is_still_recognised(tmp_path):
    """Rows written before the asset joined the id keep their id; the same file is not re-run."""
    from daemon.queue.ledger import legacy_plan_id

    daemon = Daemon(tmp_path, MemorySource("mem"), MemorySink("out"), rules())
    daemon.put("hero.png", image((1, 2, 3)))
    [row] = daemon.ledger.plans()
    legacy = legacy_plan_id(row.plan.content, row.rule, row.rule_digest)
    daemon.ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:  # the row as an older daemon wrote it
        db.execute("UPDATE jobs SET plan_id=? WHERE plan_id=?", (legacy, row.id))
        db.execute("UPDATE plans SET id=? WHERE id=?", (legacy, row.id))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.submit(row.plan) == (legacy, False)
    ledger.close()


# -- item 2: a new version on S3 ---------------------------------------------------------------


def test_an_overwritten_file_on_an_s3_sink_gets_a_manifest_of_the_new_round(
    tmp_path,
    moto_endpoint,  # noqa: F811  (the fixture)
    bucket,  # noqa: F811
):
    from daemon.sinks.s3 import S3Sink

    sink = S3Sink("out", bucket, "darkroom", endpoint_url=moto_endpoint, region="us-east-1")
    daemon = Daemon(tmp_path, MemorySource("mem"), sink, rules())
    first, second = image((200, 10, 10)), image((10, 10, 200))
    daemon.put("shoot/hero.png", first)
    daemon.drain()
    daemon.put("shoot/hero.png", second)
    daemon.drain()

    manifest = parse_manifest(sink.read("r/shoot/hero.png/manifest.json"))
    assert manifest.source.sha256 == hashlib.sha256(second).hexdigest()
    assert [r.round for r in manifest.rounds] == [1]
    assert all(sink.exists(p) for p in manifest.rounds[0].outputs)
    assert_outputs_intact(sink, json.loads(sink.read("r/shoot/hero.png/manifest.json")))
    page = sink.read("r/shoot/hero.png/index.html").decode()
    assert "rounds/1/" in page
    [entry] = load_index(sink)
    assert entry.source_sha256 == hashlib.sha256(second).hexdigest()
    daemon.ledger.close()


def test_a_round_another_daemon_committed_meanwhile_is_kept(
    tmp_path,
    moto_endpoint,  # noqa: F811  (the fixture)
    bucket,  # noqa: F811
):
    """IfMatch on the manifest the round replaces: a genuine conflict keeps the winner's."""
    from daemon.errors import AlreadyCommitted
    from daemon.sinks.s3 import S3Sink

    sink = S3Sink("out", bucket, "", endpoint_url=moto_endpoint, region="us-east-1")
    sink.write_manifest("r/a/manifest.json", b'{"steps": [], "by": "first"}')
    seen = sink.version("r/a/manifest.json")
    sink.write_manifest("r/a/manifest.json", b'{"steps": [], "by": "second"}', replacing=seen)
    with pytest.raises(AlreadyCommitted):  # written against the version before "second"
        sink.write_manifest("r/a/manifest.json", b'{"steps": [], "by": "late"}', replacing=seen)
    with pytest.raises(AlreadyCommitted):  # a first round expects no manifest there
        sink.write_manifest("r/a/manifest.json", b'{"steps": [], "by": "first again"}')
    assert json.loads(sink.read("r/a/manifest.json"))["by"] == "second"


# -- commit order and recovery -----------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL at a fault point (BaseException: nothing on the way catches it)."""


@pytest.mark.parametrize("point", ["after-page", "after-manifest"])
def test_after_a_kill_at_each_publish_point_a_restart_completes_the_publish(
    tmp_path, monkeypatch, point
):
    sink, source = FolderSink("out", tmp_path / "out"), MemorySource("mem")

    def kill(name: str) -> None:
        if name == point:
            raise Killed(name)

    monkeypatch.setattr(faults, "point", kill)
    daemon = Daemon(tmp_path / "state", source, sink, rules())
    daemon.put("shoot/hero.png", image((5, 6, 7)))
    with pytest.raises(Killed):
        daemon.drain()
    daemon.ledger.close()
    folder = tmp_path / "out" / "r" / "shoot" / "hero.png"
    # Whatever the moment, a manifest never exists without its page.
    assert (folder / "index.html").exists()
    assert (folder / "manifest.json").exists() == (point == "after-manifest")
    assert not (tmp_path / "out" / INDEX_JSON).exists()

    monkeypatch.setattr(faults, "point", lambda name: None)
    restarted = Daemon(tmp_path / "state", source, sink, rules())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["source"]["key"] == "shoot/hero.png"
    assert (folder / "index.html").exists()
    assert [e.manifest for e in load_index(sink)] == ["r/shoot/hero.png/manifest.json"]
    assert "hero.png" in (tmp_path / "out" / "index.html").read_text()
    assert [p.state.value for p in restarted.ledger.plans()] == ["done"]
    restarted.ledger.close()


# -- the shared root index ---------------------------------------------------------------------


def _race(sinks: list[Sink], per_writer: int) -> None:
    barrier = threading.Barrier(len(sinks))

    def writer(n: int, sink: Sink) -> None:
        barrier.wait()
        for i in range(per_writer):
            update_index(sink, IndexEntry(manifest=f"r/w{n}-{i}/manifest.json", rule="r"))

    threads = [threading.Thread(target=writer, args=(n, s)) for n, s in enumerate(sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)


def test_two_folder_sinks_on_one_root_keep_every_index_entry(tmp_path, monkeypatch):
    # Two "daemons": separate sink instances, and the in-process lock out of the way, so only
    # the sink's compare-and-swap keeps them apart (as between two processes).
    import daemon.outputs.index as index_module

    monkeypatch.setattr(index_module, "_index_lock", _NoLock())
    _race([FolderSink("out", tmp_path), FolderSink("out", tmp_path)], per_writer=60)
    entries = load_index(FolderSink("out", tmp_path), rebuild=False)
    assert len(entries) == 120
    # The page shows each rule's newest rows and says how many more its board has.
    html = (tmp_path / "index.html").read_text()
    assert html.count("<tr><td>") == index_module.INDEX_ROWS_PER_RULE
    assert f"and {120 - index_module.INDEX_ROWS_PER_RULE} older on" in html


def test_two_s3_sinks_on_one_prefix_keep_every_index_entry(
    monkeypatch,
    moto_endpoint,  # noqa: F811  (the fixture)
    bucket,  # noqa: F811
):
    import daemon.outputs.index as index_module
    from daemon.sinks.s3 import S3Sink

    monkeypatch.setattr(index_module, "_index_lock", _NoLock())
    sinks: list[Sink] = [
        S3Sink("out", bucket, "shared", endpoint_url=moto_endpoint, region="us-east-1")
        for _ in range(2)
    ]
    _race(sinks, per_writer=25)
    assert len(load_index(sinks[0], rebuild=False)) == 50


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- darkroom check ----------------------------------------------------------------------------


def test_check_warns_when_a_rules_output_folder_can_collide(tmp_path, capsys):
    from daemon.cli.main import main

    (tmp_path / "rules").mkdir()
    (tmp_path / "drop").mkdir()
    base = (
        "match: {{source: drop, include: ['**/*.jpg', '**/*.png']}}\n"
        "steps: [{{name: one, model: tiny}}]\n"
        "output: {{sink: out{extra}}}\n"
    )
    (tmp_path / "rules" / "flat.yaml").write_text(
        "name: flat\n" + base.format(extra=", path: '{rule}/{stem}/{step}-{variant}.{ext}'")
    )
    (tmp_path / "rules" / "safe.yaml").write_text("name: safe\n" + base.format(extra=""))
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        "rules_dir: rules\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
    )
    assert main(["check", "--config", str(config)]) == 0  # a warning, not a failure
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err
    assert all("flat.yaml" in w and "rule 'flat'" in w for w in warnings)
    assert any("{dir}" in w and "a/x.jpg and b/x.jpg" in w for w in warnings)
    assert any("{source_ext}" in w and "x.jpg and x.png" in w for w in warnings)
