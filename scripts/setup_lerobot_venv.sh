#!/usr/bin/env bash
# `make lerobot-venv`: .venv-lerobot, a venv of its own holding lerobot (LeRobotDataset) with the
# versions it pins (torch < 2.12, numpy < 2.3, huggingface-hub < 2, av 15, datasets < 5), which
# clash with the project's .venv. test/test_lerobot_compat.py runs a script in it to read what
# `vla_ros dataset export` wrote with lerobot's own reader. Safe to run again.
# Cost on a fresh machine: see docs/DATASET.md ("Checking against lerobot").
set -euo pipefail
cd "$(dirname "$0")/.."
LEROBOT_VERSION=${LEROBOT_VERSION:-0.6.1}
venv=.venv-lerobot

if [[ ! -x $venv/bin/python ]]; then
  python=$(scripts/find_python.sh)  # lerobot 0.6 requires Python >= 3.12
  echo "setup_lerobot_venv: creating $venv with $python"
  "$python" -m venv "$venv"
fi
# accelerate-dep: lerobot-train needs accelerate (`make checkpoint-act`); lerobot[training] would add wandb too
echo "setup_lerobot_venv: pip install lerobot[dataset,accelerate-dep]==$LEROBOT_VERSION (its pinned torch from PyPI is the CUDA build)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "lerobot[dataset,accelerate-dep]==$LEROBOT_VERSION"
"$venv/bin/python" -c "import lerobot.datasets.lerobot_dataset as m; print('setup_lerobot_venv: lerobot', __import__('lerobot').__version__, 'ready')"
