#!/usr/bin/env bash
# Install what cryo's tests need (Debian 12, as root). Idempotent: does
# nothing when everything is already there.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v ghc >/dev/null 2>&1 || need+=(ghc)
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
dpkg -s libclang1-14 >/dev/null 2>&1 || need+=(libclang1-14)
# Real threaded runtimes the thread tests restore: Go and CPython.
command -v go >/dev/null 2>&1 || need+=(golang-go)
# Real servers the socket tests restore.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v dbus-send >/dev/null 2>&1 || need+=(dbus-bin)
# The network lock of TCP connections kept with TCP repair.
command -v nft >/dev/null 2>&1 || need+=(nftables)
# A pre-fork server whose master and workers share unlinked files.
command -v gunicorn >/dev/null 2>&1 || need+=(gunicorn)
# A master that keeps its own PID (nginx-light: the smallest build).
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# A real process tree with System V shared memory.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/python3 ] || need+=(python3)
# node: its process.pid kept in V8's heap, its child_process stdio
# sockets (tests/servers.rs).
command -v node >/dev/null 2>&1 || need+=(nodejs)
# Interpreters kept mid-session (tests/interpreters.rs; ghc's ghci, bash
# and perl are there already).
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
# A terminal multiplexer: a server, a shell on its pty, a unix socket.
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# What a packed restorer does with its own code (tests/pack.rs).
command -v strace >/dev/null 2>&1 || need+=(strace)
# numpy on OpenBLAS, which binds its buffers to a NUMA policy (mbind).
/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3-numpy)
dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need+=(libopenblas0-pthread)
# A program that sandboxes itself with libseccomp.
/usr/bin/python3 -c 'import seccomp' >/dev/null 2>&1 || need+=(python3-seccomp)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-test-deps: everything present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: missing ${need[*]}; run this script as root (apt-get install)" >&2
  exit 1
fi
echo "install-test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
