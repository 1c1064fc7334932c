#!/usr/bin/env bash
# Installs what selfdeploy's tests need on a Debian or Ubuntu machine that has Rust:
# `just`, git, Chromium (for the browser test), Node.js and the test's npm packages.
# Safe to run again. Uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v curl >/dev/null || need_apt+=(curl)
command -v chromium >/dev/null || need_apt+=(chromium fonts-dejavu-core)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v just >/dev/null; then
    # A prebuilt just from PyPI installs in seconds; `cargo install just` takes minutes.
    if command -v pip3 >/dev/null || command -v pip >/dev/null; then
        "$(command -v pip3 || command -v pip)" install --quiet rust-just
    else
        cargo install --locked just
    fi
fi
if [ -f tests/browser/package-lock.json ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
echo "setup done: just $(just --version | cut -d' ' -f2), $(chromium --version 2>/dev/null || echo 'no chromium')"
