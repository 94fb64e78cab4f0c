"""The daily digest: one PNG per rule of the day's sources, from index.json."""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

from PIL import Image

from daemon.outputs import page as review_page
from daemon.outputs.digest import build_digest

from .conftest import as_manifest


def test_digest_per_rule_for_the_day(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    for key, rule, created in [
        ("b.jpg", "product-lifestyle", "2025-03-04T18:00:00Z"),
        ("c.jpg", "other rule/x", "2025-03-04T09:00:00Z"),
        ("d.jpg", "product-lifestyle", "2025-03-05T00:00:01Z"),
    ]:
        m = json.loads(json.dumps(manifest))
        m["source"]["key"], m["rule"]["name"], m["created_at"] = key, rule, created
        if key == "c.jpg":
            m["sheet"] = None  # falls back to its first variants
        review_page.publish(sink, as_manifest(m), manifest_path=f"x/{key[0]}/manifest.json")

    written = build_digest(sink, datetime.date(2025, 3, 4))
    assert written == [
        "digests/2025-03-04/other-rule-x.png",
        "digests/2025-03-04/product-lifestyle.png",
    ]
    two = Image.open(io.BytesIO(sink.read(written[1])))
    one = Image.open(io.BytesIO(sink.read(written[0])))
    assert two.width > one.width  # two cells side by side vs one
    assert two.height == one.height
    assert build_digest(sink, datetime.date(2025, 3, 4), rules=["other rule/x"]) == written[:1]
    assert build_digest(sink, datetime.date(2025, 3, 6)) == []
    assert build_digest(sink, datetime.date(2025, 3, 5)) == [
        "digests/2025-03-05/product-lifestyle.png"
    ]
