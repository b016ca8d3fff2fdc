#!/usr/bin/env bash
# Build CRIU 4.1.x for `cryo compare` (Debian 12's criu 3.17 fails on
# kernels with [vvar_vclock]). Fetches the source package from Debian trixie
# through a private apt source list (the system's lists are not touched),
# installs the build dependencies and builds criu in DEST (default
# ./target/criu; `cryo compare --build-criu` passes the directory beside
# its own target dir). Idempotent: prints the path of a criu that already works and
# exits. Prints the binary's path on its last line.
set -euo pipefail
dest=${1:-$PWD/target/criu}
bin=$(ls -d "$dest"/criu-*/criu/criu 2>/dev/null | head -n1 || true)
if [ -n "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "build-criu: already built"; echo "$bin"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-criu: needs root (apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
deps=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
      protobuf-compiler python3-protobuf libnl-3-dev libnl-route-3-dev libnet1-dev
      libcap-dev libaio-dev libbsd-dev uuid-dev libgnutls28-dev libnftables-dev xz-utils)
missing=()
for p in "${deps[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-criu: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
mkdir -p "$dest"
apt_dir=$dest/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/src"
cat >"$apt_dir/sources.list" <<'LIST'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
LIST
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
tarball=$(ls "$apt_dir"/src/criu_4.*.orig.tar.* 2>/dev/null | head -n1 || true)
if [ -z "$tarball" ]; then
    echo "build-criu: fetching criu's source from Debian trixie"
    apt-get "${opts[@]}" update -qq
    (cd "$apt_dir/src" && apt-get "${opts[@]}" source --download-only criu) || true
    tarball=$(ls "$apt_dir"/src/criu_4.*.orig.tar.* 2>/dev/null | head -n1 || true)
    [ -n "$tarball" ] || { echo "build-criu: could not fetch criu 4.x source from trixie" >&2; exit 1; }
fi
echo "build-criu: building from $(basename "$tarball")"
tar -xf "$tarball" -C "$dest"
src=$(ls -d "$dest"/criu-4.* | head -n1)
make -C "$src" -j"$(nproc)" criu >"$dest/build.log" 2>&1 || { tail -n 30 "$dest/build.log" >&2; exit 1; }
"$src/criu/criu" --version >/dev/null
echo "build-criu: built"
echo "$src/criu/criu"
