#!/usr/bin/env bash
# Installs the Debian tools the tests use: espeak-ng (speech) and sox (resampling) to make speech,
# PulseAudio (a private daemon the desktop client's tests play into and record from), Xvfb and
# the X/Qt libraries and CJK fonts the desktop client's window needs (Hangul must render),
# docker-compose (v1, python) to validate docker-compose.gpu.yml offline (`config` needs no
# Docker engine), and chromium, the real browser the console's tests drive with Playwright
# (Playwright's own browser download needs the internet). The deployment tests also need kubectl with kustomize v4 or newer (`kubectl
# kustomize`): Debian bookworm's kubectl is 1.20 (kustomize v2), too old, so kubectl is checked,
# not installed.
set -euo pipefail
missing=()
for tool in espeak-ng sox; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# Without recommends: docker-compose would bring the whole Docker engine.
missing_lean=()
command -v docker-compose >/dev/null || missing_lean+=(docker-compose)
[ -x /usr/lib/chromium/chromium ] || missing_lean+=(chromium)
command -v pulseaudio >/dev/null || missing_lean+=(pulseaudio)
command -v paplay >/dev/null || missing_lean+=(pulseaudio-utils)
command -v Xvfb >/dev/null || missing_lean+=(xvfb)
for lib in libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 \
           libdbus-1-3 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-randr0 libxcb-sync1 \
           libxcb-xfixes0 libx11-xcb1 libglib2.0-0; do
  dpkg -s "$lib" >/dev/null 2>&1 || missing_lean+=("$lib")
done
[ -d /usr/share/fonts/opentype/noto ] || missing_lean+=(fonts-noto-cjk)
command -v kubectl >/dev/null || command -v kustomize >/dev/null || \
  echo "kubectl not found: tests/integration/test_deploy_files.py needs kubectl >= 1.21 or kustomize v4+" >&2
[ ${#missing[@]} -eq 0 ] && [ ${#missing_lean[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  [ ${#missing[@]} -eq 0 ] || echo "missing ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}'" >&2
  [ ${#missing_lean[@]} -eq 0 ] || echo "missing ${missing_lean[*]}: run" \
    "'sudo apt-get install -y --no-install-recommends ${missing_lean[*]}'" >&2
  exit 1
fi
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ ${#missing_lean[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_lean[@]}"
fi
