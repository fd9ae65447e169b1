#!/usr/bin/env bash
# Install everything ainode needs on a Debian machine, idempotently:
#   Debian packages (dcmtk, orthanc + DICOMweb plugin, dicom3tools, redis) when missing,
#   a virtualenv at .venv in the checkout, torch (CPU build) first, then ainode itself.
# Usage: deploy/install.sh [--dev]     (--dev adds test tools and the independent DICOM checkers)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

apt_pkgs=(dcmtk dcm2niix orthanc orthanc-dicomweb dicom3tools redis-server python3-venv openssl)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian orthanc package starts a system Orthanc on 4242/8042; ainode never uses it.

if [ "$dev" = 1 ]; then
  # the independent DICOM checkers the tests run (pinned; cached, offline once installed)
  tools/checkers/install
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.ainode-installed
want="$(sha256sum pyproject.toml | cut -c1-16)-$dev"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, by itself, so pip takes the local CPU build and never a CUDA one.
  .venv/bin/pip install -q torch==2.13.0
  if [ "$dev" = 1 ]; then
    .venv/bin/pip install -q -e '.[dev]'
  else
    .venv/bin/pip install -q -e .
  fi
  echo "$want" > "$stamp"
fi
echo "install: ok ($(.venv/bin/ainode version))"
