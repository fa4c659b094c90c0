"""The recipe version guards stores against silent reuse after a change to the training code: when
the code that decides what a setting trains changes, this test fails until the change is
acknowledged here, and `firekd.keys.RECIPE_VERSION` is bumped if results change (every store made
before is then retrained, never reused)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from firekd.keys import RECIPE_VERSION

SRC = Path(__file__).resolve().parents[1] / "src" / "firekd"
# The code between a setting and the weights it trains: loop, losses, models, data pipeline, compression.
TRAINING_CODE = ("engine/loop.py", "engine/runtime.py", "kd", "models", "data/transforms.py",
                 "data/dataset.py", "data/images.py", "data/splits.py", "data/synthetic.py", "compress",
                 "recipes/context.py", "recipes/teacher.py", "recipes/student.py", "recipes/compress.py")
# {recipe version: digest of TRAINING_CODE when it was acknowledged}
# 2: the training curves moved to the outputs stage (drawn from the logs), matplotlib imported only
# where figures are drawn: no weight changes
ACKNOWLEDGED = {2: "852dc9221c281922"}


def code_digest() -> str:
    """Of the code's syntax tree without docstrings: comments and formatting do not count."""
    h = hashlib.sha256()
    files = sorted(p for entry in TRAINING_CODE
                   for p in ((SRC / entry).rglob("*.py") if (SRC / entry).is_dir() else [SRC / entry]))
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(path.relative_to(SRC).as_posix().encode() + ast.dump(tree).encode())
    return h.hexdigest()[:16]


def test_training_code_changes_are_acknowledged_with_the_recipe_version():
    digest = code_digest()
    assert ACKNOWLEDGED.get(RECIPE_VERSION) == digest, (
        f"the training code changed (digest {digest}). If a setting now trains other weights, bump "
        f"firekd.keys.RECIPE_VERSION; then record {{RECIPE_VERSION: '{digest}'}} in ACKNOWLEDGED here")


def test_docstrings_and_comments_do_not_count(tmp_path, monkeypatch):
    import test_recipe_version as me

    (tmp_path / "m.py").write_text('"""Doc."""\nX = 1  # note\n')
    monkeypatch.setattr(me, "SRC", tmp_path)
    monkeypatch.setattr(me, "TRAINING_CODE", ("m.py",))
    before = code_digest()
    (tmp_path / "m.py").write_text('"""Other doc."""\n\nX = 1  # other note\n')
    assert code_digest() == before
    (tmp_path / "m.py").write_text('"""Doc."""\nX = 2\n')
    assert code_digest() != before
