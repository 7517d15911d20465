"""The README's runnable examples run as written (each code block of the listed sections)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2])
def test_use_it_in_your_trainer_examples_run(index, tmp_path, monkeypatch):
    blocks = _blocks("Use it in your trainer")
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "readme_example"}
    exec(compile(blocks[index], f"README example {index}", "exec"), ns)
    if index == 2:  # the diffusion example's rewards reached the images
        assert ns["images"].grad is not None and ns["images"].grad.abs().sum() > 0
