"""Where the checkout's folders are: every module that reads templates/, resources/ or writes .cache/ starts here,
so moving a module never changes what it finds."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # utils/common/paths.py → the repository root
