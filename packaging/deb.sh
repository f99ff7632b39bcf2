#!/usr/bin/env bash
# `make deb`: dist/mito_<version>-1_amd64.deb with dpkg-deb alone. The binary inside is
# the static musl build from `make dist`: one binary serves every Debian and Ubuntu
# release, it depends on no library version, and it is the build the packaging tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
DEB_VERSION="$VERSION-1"
BIN="target/$TARGET/release/mito"
[ -x "$BIN" ] || { echo "make deb: $BIN is missing; run make dist first" >&2; exit 1; }

root=target/deb/root
rm -rf target/deb && mkdir -p "$root/DEBIAN"
install -D -m 0755 "$BIN" "$root/usr/bin/mito"
install -D -m 0644 packaging/deb/config.toml "$root/etc/mito/config.toml"
for unit in packaging/systemd/*.service; do
    install -D -m 0644 "$unit" "$root/lib/systemd/system/$(basename "$unit")"
done
doc="$root/usr/share/doc/mito"
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
install -D -m 0644 config.example.toml "$doc/examples/config.example.toml"
gzip -9n <packaging/deb/changelog >"$doc/changelog.Debian.gz"
gzip -9n <README.md >"$doc/README.md.gz"
gzip -9n <ARCHITECTURE.md >"$doc/ARCHITECTURE.md.gz"
chmod 0644 "$doc"/*.gz
if [ -s packaging/deb/lintian-overrides ]; then
    install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/mito"
fi

for script in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
done
echo /etc/mito/config.toml >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: mito
Version: $DEB_VERSION
Architecture: amd64
Maintainer: mito developers <mito@example.org>
Installed-Size: $size
Depends: adduser, openssl
Recommends: postgresql
Section: admin
Priority: optional
Description: distributed task execution: coordinator, worker and client
 mito runs commands ("tasks") on a pool of worker machines. Users submit
 tasks to groups; workers serve groups; a coordinator keeps every piece of
 state in PostgreSQL and hands tasks out. It speaks the HTTP API of
 mitosis 0.6.
 .
 This package holds the static binary, systemd units for the coordinator
 and for any number of workers (mito-worker@N), and /etc/mito/config.toml.
 No unit is enabled or started on install.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p dist
out="dist/mito_${DEB_VERSION}_amd64.deb"
# Every file root-owned without needing root or fakeroot to build.
dpkg-deb --root-owner-group -Zxz --build "$root" "$out"
echo "$out"
