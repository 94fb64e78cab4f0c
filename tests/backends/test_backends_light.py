"""Importing the backends package (and each backend module) must not import torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_backend_modules_do_not_import_torch() -> None:
    code = (
        "import backends, backends.img2img, backends.stub, backends.random_models\n"
        "import backends.runtime.loading, backends.runtime.placement, backends.runtime.errors\n"
        "import backends.runtime.memory, backends.runtime.extras, backends.runtime.ladder\n"
        "import backends.sizes, backends.cards, backends.profiles, backends.param_counts\n"
        "import sys\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(loaded & {'torch', 'diffusers', 'transformers'})\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
