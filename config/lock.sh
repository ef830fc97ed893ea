#!/bin/sh
# Regenerate the image's hash-pinned lock files from pyproject.toml's exact pins (run it after
# changing a dependency; tests/test_deployment.py fails while the two disagree). Needs pip-tools:
#   python3 -m venv /tmp/piptools && /tmp/piptools/bin/pip install pip-tools==7.6.2
#   LOCK_WITH=/tmp/piptools/bin/pip-compile config/lock.sh
set -eu
cd "$(dirname "$0")/.."
compile="${LOCK_WITH:-pip-compile}"  # not PIP_*: pip reads those as its options
options="--quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links"
# shellcheck disable=SC2086  # $options is a list of flags
"$compile" $options --output-file config/requirements.lock pyproject.toml
build_in=$(mktemp --suffix=.in)
trap 'rm -f "$build_in"' EXIT
echo "setuptools>=69" > "$build_in"  # pyproject.toml's [build-system] requires
# shellcheck disable=SC2086
"$compile" $options --output-file config/build-requirements.lock "$build_in"
