"""Every example of README.md and docs/*.md that shows its output runs and prints exactly that."""

import contextlib
import io
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A python block immediately followed by "prints" and the block of its output.
_EXAMPLE = re.compile(r"```python\n((?:(?!```).)*?)```\n\nprints\n\n```\n((?:(?!```).)*?)```", re.S)


def _examples():
    found = []
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        matches = _EXAMPLE.findall(page.read_text(encoding="utf-8"))
        found += [(f"{name}:{i}", code, out) for i, (code, out) in enumerate(matches)]
    return found


EXAMPLES = _examples()


def test_the_pages_keep_their_runnable_examples():
    pages = {example_id.split(":")[0] for example_id, _, _ in EXAMPLES}
    assert "README.md" in pages, "README.md lost its runnable example"
    assert len(EXAMPLES) >= 9, f"README.md and docs/ lost runnable examples: {sorted(pages)}"


@pytest.mark.parametrize(("example_id", "code", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_prints_what_the_page_says(example_id, code, expected, tmp_path):
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # examples that write files write them here
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{example_id} (example)", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    assert out.getvalue() == expected
