#!/usr/bin/env python3
"""Tiny fake RSVQA-LR / RSVQAxBEN data in the published JSON layout.

``make_fake_rsvqa(root, variant)`` writes ``<prefix>_split_<split>_{images,questions,answers}.json``
(``{"images": [...]}`` etc., with ``active`` flags and cross-referencing ids) and one GeoTIFF per
image in ``Images_LR/`` (LR: 3-band uint8, 16×16, UTM) or ``Images/`` (xBEN: 3-band uint8
without georeferencing, as web-distributed RGB patches often are). Run as a script:
``python tests/data/rsvqa/data.py OUT_DIR [lr|xben]``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import affine
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from thinkingearth.data.raster import write_geotiff

_LAYOUT = {"lr": ("LR", "Images_LR"), "xben": ("RSVQAxBEN", "Images")}
_TYPES = {
    "lr": ("presence", "comp", "rural_urban", "count"),
    "xben": ("yes/no", "LC"),
}


def make_fake_rsvqa(
    root: str | Path, variant: Literal["lr", "xben"] = "lr", size: int = 16
) -> dict[str, list[dict[str, Any]]]:
    """Write three splits of two images each (one inactive question per split) into ``root``.

    Returns:
        Per split, the active question-answer pairs written: ``image_id``, ``question``,
        ``answer``, ``type``.
    """
    root = Path(root)
    prefix, image_dir = _LAYOUT[variant]
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    types = _TYPES[variant]
    written: dict[str, list[dict[str, Any]]] = {}
    next_image, next_question, next_answer = 0, 0, 0
    for split in ("train", "val", "test"):
        images, questions, answers, pairs = [], [], [], []
        for _ in range(2):
            image_id = next_image
            next_image += 1
            pixels = np.full((3, size, size), 10 * image_id, np.uint8)
            pixels[0] += 1  # red differs from green and blue: the channel order is checked
            path = root / image_dir / f"{image_id}.tif"
            if variant == "lr":
                write_geotiff(
                    path,
                    pixels,
                    transform=affine.Affine(10, 0, 600000 + 2560 * image_id, 0, -10, 5800000),
                    crs="EPSG:32631",
                )
            else:
                profile = {
                    "driver": "GTiff",
                    "count": 3,
                    "height": size,
                    "width": size,
                    "dtype": "uint8",
                }
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(path, "w", **profile) as ds:
                        ds.write(pixels)
            qids = []
            for k in range(3):
                qid = next_question
                next_question += 1
                aid = next_answer
                next_answer += 1
                active = k < 2  # the third question of each image is inactive
                kind = types[(image_id + k) % len(types)]
                question = f"Is there a building in image {image_id} ({k})?"
                answer = "yes" if k == 0 else str(image_id + k)
                questions.append(
                    {
                        "id": qid,
                        "date_added": 1590000000.0,
                        "img_id": image_id,
                        "people_id": 0,
                        "type": kind,
                        "question": question,
                        "answers_ids": [aid],
                        "active": active,
                    }
                )
                answers.append(
                    {
                        "id": aid,
                        "date_added": 1590000000.0,
                        "question_id": qid,
                        "people_id": 0,
                        "answer": answer,
                        "active": True,
                    }
                )
                qids.append(qid)
                if active:
                    pairs.append(
                        {"image_id": image_id, "question": question, "answer": answer, "type": kind}
                    )
            record: dict[str, Any] = {
                "id": image_id,
                "date_added": 1590000000.0,
                "people_id": 0,
                "questions_ids": qids,
                "active": True,
            }
            if variant == "xben":
                record["original_name"] = f"S2A_MSIL2A_20170613T101031_{image_id}_40"
            images.append(record)
        # an inactive image whose questions are active must not be served
        images.append({"id": 999, "questions_ids": [], "active": False})
        questions.append(
            {
                "id": 10_000 + len(written),
                "img_id": 999,
                "type": types[0],
                "question": "Ghost?",
                "answers_ids": [],
                "active": True,
            }
        )
        for name, key, data in (
            ("images", "images", images),
            ("questions", "questions", questions),
            ("answers", "answers", answers),
        ):
            with open(root / f"{prefix}_split_{split}_{name}.json", "w", encoding="utf-8") as f:
                json.dump({key: data}, f)
        written[split] = pairs
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "rsvqa-fake"
    which = sys.argv[2] if len(sys.argv) > 2 else "lr"
    made = make_fake_rsvqa(out, which)  # type: ignore[arg-type]
    print(
        f"wrote fake RSVQA ({which}) with {sum(len(v) for v in made.values())} questions to {out}"
    )
