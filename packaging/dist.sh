#!/usr/bin/env bash
# `make dist`: the static x86_64 musl build of mito, packed with what an install by hand
# needs: dist/mito-<version>-x86_64-unknown-linux-musl.tar.gz holding the binary, README,
# LICENSE, config.example.toml, a ready /etc/mito/config.toml and the systemd units (their
# paths changed to /usr/local/bin/mito, where README: Install puts a binary by hand).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
NAME="mito-$VERSION-$TARGET"
MAX_BYTES=$((10 * 1024 * 1024))

cargo build --release --locked --target "$TARGET"
BIN="target/$TARGET/release/mito"

# The release profile strips already; this also holds if it ever stops doing so.
strip "$BIN" 2>/dev/null || true
desc=$(file -b "$BIN")
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "make dist: $BIN is not statically linked: $desc" >&2; exit 1 ;;
esac
size=$(stat -c %s "$BIN")
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "make dist: $BIN is $size bytes, more than the 10 MB bound" >&2
    exit 1
fi

stage="target/dist/$NAME"
rm -rf "target/dist" && mkdir -p "$stage/systemd"
install -m 0755 "$BIN" "$stage/mito"
install -m 0644 README.md LICENSE config.example.toml "$stage/"
install -m 0644 packaging/deb/config.toml "$stage/config.toml"
for unit in packaging/systemd/*.service; do
    sed 's|/usr/bin/mito|/usr/local/bin/mito|g' "$unit" >"$stage/systemd/$(basename "$unit")"
done
mkdir -p dist
# Owned by root and dated by the last commit, so two builds of one commit pack the same way.
mtime=$(git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
    -C target/dist -czf "dist/$NAME.tar.gz" "$NAME"
echo "dist/$NAME.tar.gz: mito $VERSION, $desc, $size bytes"
