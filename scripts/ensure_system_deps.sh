#!/usr/bin/env bash
# Optional system packages: Chromium (browser tests) and the full Fashion-MNIST (Debian's dataset package).
# Installs them with apt-get only when it can do so without asking anything: as root, or through passwordless
# sudo (`sudo -n`, which fails instead of prompting). Otherwise it installs nothing and says what it skipped
# and why. Never fails the build: the product works without either (bundled data subset; browser tests skip
# outside CI). Overridable for tests: CS_DEBIAN_FASHION_MNIST (where the dataset package puts its files).
set -u
dataset_dir="${CS_DEBIAN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
want=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || want+=(chromium)
[ -f "$dataset_dir/t10k-images-idx3-ubyte.gz" ] || want+=(dataset-fashion-mnist)
[ ${#want[@]} -eq 0 ] && exit 0

skipped() {
  echo "system-deps: skipped installing ${want[*]}: $1."
  echo "system-deps: without them browser tests are skipped outside CI and the bundled 2,500-image data subset is used."
  exit 0
}

command -v apt-get >/dev/null 2>&1 || skipped "apt-get not found (not a Debian/Ubuntu system); install them with your package manager"
if [ "$(id -u)" = 0 ]; then
  run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true </dev/null >/dev/null 2>&1; then
  run=(sudo -n)
else
  skipped "not root and sudo would ask for a password (checked with 'sudo -n', which never prompts); to install them: sudo apt-get install ${want[*]}"
fi

log="${TMPDIR:-/tmp}/cs-apt.log"
echo "system-deps: installing ${want[*]} with ${run[*]:+${run[*]} }apt-get (log: $log)"
export DEBIAN_FRONTEND=noninteractive
install() { "${run[@]}" apt-get install -y -q "${want[@]}" </dev/null >>"$log" 2>&1; }
install || { "${run[@]}" apt-get update -q </dev/null >>"$log" 2>&1 && install; } \
  || echo "system-deps: warning: apt-get could not install ${want[*]} (see $log); continuing without them."
exit 0
