#!/usr/bin/env bash
# Optional system packages: Chromium (browser tests) and the full Fashion-MNIST (Debian's dataset package).
# Installs them with apt-get when this is a Debian/Ubuntu machine and we may (root or passwordless sudo);
# otherwise says what is missing. The product works without either (bundled data subset, browser tests skip
# outside CI).
set -u
want=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || want+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || want+=(dataset-fashion-mnist)
[ ${#want[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
  if [ "$sudo" != none ]; then
    echo "installing system packages: ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "${want[@]}" >/tmp/cs-apt.log 2>&1 \
      || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "${want[@]}" >/tmp/cs-apt.log 2>&1; } \
      || echo "warning: apt-get could not install ${want[*]} (see /tmp/cs-apt.log)"
    exit 0
  fi
fi
echo "note: optional system packages not installed: ${want[*]} (browser tests are skipped outside CI; the bundled data subset is used)"
