"""Every README example that shows its output runs and prints exactly what the README says."""

import contextlib
import io
import os
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# A python block immediately followed by "prints" and the block of its output.
_EXAMPLE = re.compile(r"```python\n((?:(?!```).)*?)```\n\nprints\n\n```\n((?:(?!```).)*?)```", re.S)


def _examples():
    text = README.read_text(encoding="utf-8")
    found = _EXAMPLE.findall(text)
    assert len(found) >= 3, "README lost its runnable examples"
    return found


@pytest.mark.parametrize("index", range(len(_examples())))
def test_example_output_matches_readme(index, tmp_path):
    code, expected = _examples()[index]
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # examples that write files write them here
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{README}:example {index}", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    assert out.getvalue() == expected
