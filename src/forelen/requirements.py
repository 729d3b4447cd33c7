"""The oldest torch and transformers forelen runs on: one line naming them, not a crash deep inside.

pyproject.toml declares the same floors (tests/test_min_versions.py compares the two), and
scripts/minver_venv.sh installs exactly them for the engine's tests.
"""

from __future__ import annotations

import re

from forelen.errors import ForelenError

# package -> (oldest version, what needs it)
MINIMUM = {
    "torch": ("2.5", "scaled_dot_product_attention(enable_gqa=...)"),
    "transformers": ("4.56", "the decoder layers' `past_key_values` keyword and "
                             "from_pretrained(dtype=...)"),
}


def installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def release(version: str) -> tuple[int, ...] | None:
    """'2.5.0+cu124' -> (2, 5, 0); pre-releases and local builds count as their release."""
    m = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(x) for x in m.group().split(".")) if m else None


def check_versions() -> None:
    """Raise one ForelenError line if torch or transformers is missing or older than MINIMUM."""
    for name, (oldest, why) in MINIMUM.items():
        have = installed(name)
        parsed = release(have) if have else None  # unparsable: given the benefit of the doubt
        if have is None or (parsed is not None and parsed < release(oldest)):
            raise ForelenError(
                f"forelen needs {name}>={oldest} (for {why}); installed: "
                f"{have or 'none'}; upgrade with pip install '{name}>={oldest}'")
