#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the dashboard's browser test
# (tests/web/test_browser.py). Installs it with apt-get when absent (needs root or sudo).
# Under CI=true a chromium that cannot be installed is an error; on a developer machine the
# browser test is skipped instead.
set -u
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the dashboard's browser test…"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "${CI:-}" = "true" ]; then
  echo "chromium is missing at $CHROMIUM and could not be installed (required under CI)." >&2
  exit 1
fi
echo "chromium is missing at $CHROMIUM: the dashboard's browser test will be skipped." >&2
exit 0
