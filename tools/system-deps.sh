#!/usr/bin/env bash
# System packages the build and the tests use, installed only when missing (Debian/Ubuntu, as root):
# the llama.cpp build toolchain, Chromium and its chromedriver for the report's browser test, and a Slurm
# (with slurmdbd and MariaDB) for the cluster test. Without root or apt-get it only says what is missing: those
# tests then skip.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v git >/dev/null || need+=(git)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v chromium >/dev/null || need+=(chromium)          # tests/unit/report/test_page_browser.py
command -v chromedriver >/dev/null || need+=(chromium-driver)  # the same test: Selenium drives it, nothing downloaded
command -v slurmctld >/dev/null || need+=(slurm-wlm munge)  # tests/workflow/test_slurm.py (starts its own daemons)
command -v slurmdbd >/dev/null || need+=(slurmdbd)
command -v mariadbd >/dev/null || need+=(mariadb-server)
((${#need[@]})) || exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
else
  echo "system-deps: missing ${need[*]} (not root or no apt-get): the tests that need them will skip" >&2
fi
