#!/bin/sh
# Installs the Debian packages shoal needs to build and test, if any is missing.
# Used by `make check`, `make demo` and .ci/run.  Quiet when all is present.
set -e
PKGS="build-essential pkg-config libzmq3-dev libmsgpack-dev libev-dev check libsubunit-dev"
PKGS="$PKGS ${SHOAL_EXTRA_PKGS:-}"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing (run as root or install them)" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
