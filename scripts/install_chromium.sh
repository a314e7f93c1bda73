#!/usr/bin/env bash
# Install headless Chromium from Debian's packages, for the test that opens the demo's HTML report.
# Quiet and non-interactive; exits 0 when a Chromium is on PATH afterwards, non-zero with a message otherwise.
set -uo pipefail

find_chromium() {
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

if path=$(find_chromium); then
  echo "chromium: already installed ($path)"
  exit 0
fi

# apt needs root: use sudo only when we are not root, and never let it prompt for a password.
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "chromium: not installed; installing it needs root or password-less sudo (try: sudo apt-get install chromium)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed and apt-get is not available: install Chromium with your system's package manager" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# Debian calls the package "chromium"; Ubuntu's "chromium-browser" is a snap shim, tried second.
if "${SUDO[@]}" apt-get update -qq >"$log" 2>&1 \
   && { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1 \
        || "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium-browser >>"$log" 2>&1; } \
   && path=$(find_chromium); then
  echo "chromium: installed ($path)"
  rm -f "$log"
  exit 0
fi
echo "chromium: installation failed; the last lines of apt's output:" >&2
tail -n 15 "$log" >&2
rm -f "$log"
exit 1
