#!/usr/bin/env bash
# The README's first command: build the three daemons and the demo (debug
# build; incremental, so quick once built), then run permanet-demo from the
# same target directory, where it finds tunneld, addrd and wap-adapter.
# Arguments go to permanet-demo (e.g. --once). No root needed; everything
# runs on loopback in a temporary directory that is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bins -p tunneld -p addrd -p wap-adapter -p permanet-demo
# The target directory (CARGO_TARGET_DIR and .cargo/config.toml respected).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "${target_dir:-target}/debug/permanet-demo" "$@"
