import subprocess
import sys
from importlib.metadata import packages_distributions
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_daemon_is_light():
    # Every module of the daemon, not a hand-picked few: the main process must stay small.
    code = (
        "import importlib, pkgutil, sys, daemon;"
        "names = [m.name for m in pkgutil.walk_packages(daemon.__path__, 'daemon.')"
        " if not m.name.endswith('__main__')];"
        "[importlib.import_module(n) for n in names];"
        "assert len(names) > 40, names;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'boto3') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backends_never_imports_daemon():
    code = (
        "import sys, backends, backends.profiles, backends.base;"
        "assert not any(m == 'daemon' or m.startswith('daemon.') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    offenders = [
        p
        for p in (REPO / "backends").rglob("*.py")
        if "import daemon" in p.read_text() or "from daemon" in p.read_text()
    ]
    assert not offenders


def test_our_distribution_owns_both_import_packages():
    # python-daemon also installs a package named 'daemon'; both would overwrite each other.
    owners = packages_distributions()
    assert set(owners["daemon"]) == {"darkroom"}
    assert set(owners["backends"]) == {"darkroom"}
    assert Path(find_spec("daemon").origin).is_relative_to(REPO)
    assert Path(find_spec("backends").origin).is_relative_to(REPO)
