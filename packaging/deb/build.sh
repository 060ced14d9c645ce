#!/usr/bin/env bash
# Builds fedbatch_VERSION_ARCH.deb from the release binary (`make deb`).
#
#   packaging/deb/build.sh BINARY OUTDIR
#
# The package is assembled by hand with dpkg-deb rather than debhelper: the
# binary is already built by SwiftPM, and debhelper would want to drive the
# build. What debhelper would have done is done here instead: strip, gzip the
# man pages and the changelog with -9n (reproducible), compute Depends with
# dpkg-shlibdeps from the libraries the binary really links, write md5sums.
set -euo pipefail

binary=${1:?usage: build.sh BINARY OUTDIR}
outdir=${2:?usage: build.sh BINARY OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

# A binary that still needs the Swift toolchain's libraries is not portable;
# refuse it here rather than ship it.
if readelf -d "$binary" | grep -q 'libswift\|RUNPATH\|RPATH'; then
    echo "build.sh: $binary links the Swift runtime dynamically or has a RUNPATH;" \
         "build it with --static-swift-stdlib --disable-local-rpath (make build)" >&2
    exit 1
fi

version=$("$binary" --version)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -d "$root/usr/bin" "$root/DEBIAN" \
    "$root/usr/share/man/man1" "$root/usr/share/man/man5" "$root/usr/share/man/man7" \
    "$root/usr/share/doc/fedbatch/examples" "$root/lib/systemd/system"

install -m 0755 "$binary" "$root/usr/bin/fedbatch"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/fedbatch"

for page in "$top"/man/*.[157]; do
    section=${page##*.}
    gzip -9n < "$page" > "$root/usr/share/man/man$section/$(basename "$page").gz"
done

install -m 0644 "$here/copyright" "$root/usr/share/doc/fedbatch/copyright"
sed "s/@VERSION@/$version/" "$here/changelog" | gzip -9n > "$root/usr/share/doc/fedbatch/changelog.gz"
install -m 0644 "$top/README.md" "$root/usr/share/doc/fedbatch/README.md"

# Examples keep their modes (the shell scripts stay executable); the unit
# files go where systemd looks for a package's units.
cp -R --no-preserve=ownership "$top/examples/." "$root/usr/share/doc/fedbatch/examples/"
find "$root/usr/share/doc/fedbatch/examples" -name __pycache__ -prune -exec rm -rf {} +
find "$root/usr/share/doc/fedbatch/examples" -type f ! -name '*.sh' -exec chmod 0644 {} +
find "$root/usr/share/doc/fedbatch/examples" -type f -name '*.sh' -exec chmod 0755 {} +
install -m 0644 "$top"/examples/systemd/*.service "$top"/examples/systemd/*.timer "$root/lib/systemd/system/"

install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"

# dpkg-shlibdeps wants a debian/control to read; give it a minimal one.
mkdir -p "$stage/src/debian"
printf 'Source: fedbatch\n\nPackage: fedbatch\nArchitecture: any\n' > "$stage/src/debian/control"
depends=$(cd "$stage/src" && dpkg-shlibdeps -O "$root/usr/bin/fedbatch" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" "$here/control.in" > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$root/DEBIAN/md5sums"

# Reproducible: every file's time is the changelog's, and the owner is root.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date -d "$(sed -n 's/^ -- .*>  //p' "$here/changelog")" +%s)}
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
deb="$outdir/fedbatch_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
