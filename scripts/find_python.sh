#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter: $PYTHON if given, python3.12 on PATH, else the
# newest 3.12.x that pyenv has installed. Exit 1 with a clear message when there is none.
set -euo pipefail
want=3.12
works() { "$@" -c "import sys; assert sys.version_info[:2] == (3, 12)" >/dev/null 2>&1; }

if [[ -n "${PYTHON:-}" ]]; then
  if "$PYTHON" -c "import sys" >/dev/null 2>&1; then command -v "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a working interpreter" >&2; exit 1
fi
if works python3.12; then
  python3.12 -c "import sys; print(sys.executable)"; exit 0
fi
# A pyenv shim answers "command not found" unless the version is selected; ask pyenv directly.
if command -v pyenv >/dev/null 2>&1; then
  version=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -t. -k3 -n | tail -1 || true)
  if [[ -n "$version" ]]; then
    candidate="$(pyenv root)/versions/$version/bin/python$want"
    if works "$candidate"; then echo "$candidate"; exit 0; fi
  fi
fi
cat >&2 <<MSG
No Python $want found: neither python$want on PATH nor a pyenv-installed $want.x.
Install one (e.g. 'pyenv install $want' or 'apt install python$want python$want-venv'),
or point PYTHON at it: make venv PYTHON=/path/to/python$want
MSG
exit 1
