#!/bin/bash
# Import benchmark (issue 3): one rootfs as a single-gzip-layer OCI layout, imported by berth
# (with all verification: blob sha256, diff_id, limits) beside `umoci unpack` of the same
# layout and `tar -xzf` of the same layer blob, in the same run, on a warm page cache.
# berth runs with --sync=no (tar and umoci do not sync either) and, as "berth+sync", with the
# default syncfs before publishing. Reports wall time, CPU time and peak RSS (median of N runs) and the ratios; never asserts.
# Every measurement writes into a directory of its own and nothing is deleted until all runs are
# done: on ext4 without a journal (this VM's root file system) the kernel skips inodes freed in
# the last 60-360 s on each allocation, so a tool run right after another tool's tree was deleted
# pays for that deletion (several seconds per 10k inodes, growing run after run). Deleting
# between measurements made the figures depend on the order of the tools, not on the tools.
# The final clean-up deletes every tree: on such a file system wait a few minutes before the next
# invocation.
#
# Usage: tests/bench/import.sh BERTH [ROOTFS.tar[.gz|.zst|.xz] | DIR] [RUNS]
#   default rootfs: the Debian tarball from images/debian/build if that script exists,
#   else /usr packed as the layer (the report says which).
# BERTH_BENCH_BEFORE=OTHER_BERTH adds rows "before" and "before+sync" for another build, to compare
# two builds in one invocation. BERTH_BENCH_DIR (default /var/tmp) holds the layout and every
# output tree: /dev/shm compares CPU efficiency without the disk. Raw per-run figures go to stderr.
# Needs root, umoci, GNU time (/usr/bin/time), gzip, sha256sum, bc.
set -euo pipefail
berth=$(realpath "${1:?usage: $0 BERTH [ROOTFS] [RUNS]}")
src=${2:-}
runs=${3:-3}
before=${BERTH_BENCH_BEFORE:+$(realpath "$BERTH_BENCH_BEFORE")}
top=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench: must run as root" >&2; exit 1; }
for t in umoci /usr/bin/time gzip sha256sum; do
    command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 1; }
done

w=$(mktemp -d "${BERTH_BENCH_DIR:-/var/tmp}/berth-bench.XXXXXX")
fs=$(findmnt -no FSTYPE,SOURCE -T "$w" | tr -s ' ')
cleanup() { chattr -R -i "$w" 2>/dev/null || true; rm -rf "$w"; }
trap cleanup EXIT

if [ -z "$src" ] && [ -x "$top/images/debian/build" ]; then
    src=$("$top/images/debian/build" | tail -n1)
    what="Debian minbase (images/debian/build): $src"
elif [ -z "$src" ]; then
    src=/usr
    what="/usr of the host (images/debian not available)"
else
    what="$src"
fi

# The layer: an uncompressed tar of the tree, then one gzip member (gzip -6, as umoci/docker).
echo "bench: preparing the layer from $what" >&2
if [ -d "$src" ]; then
    tar -C "$src" --numeric-owner -cf "$w/layer.tar" .
else
    case $(head -c4 "$src" | od -An -tx1 | tr -d ' ') in
        1f8b*) gzip -dc "$src" > "$w/layer.tar" ;;
        28b52ffd) zstd -dc "$src" > "$w/layer.tar" ;;
        fd377a58) xz -dc "$src" > "$w/layer.tar" ;;
        *) cp "$src" "$w/layer.tar" ;;
    esac
fi
gzip -6 -n -c "$w/layer.tar" > "$w/layer.tar.gz"
diff_id=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
usize=$(stat -c %s "$w/layer.tar")
rm "$w/layer.tar"

L=$w/layout
mkdir -p "$L/blobs/sha256"
blob() { # FILE -> prints "digest size", stores the blob
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
    cp "$1" "$L/blobs/sha256/$d"; echo "$d $s"
}
read -r ld ls < <(blob "$w/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$w/config.json"
read -r cd cs < <(blob "$w/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$ls" > "$w/manifest.json"
read -r md ms < <(blob "$w/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$md" "$ms" > "$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
gzfile=$L/blobs/sha256/$ld
cat "$gzfile" > /dev/null # warm cache for everyone

measure() { # NAME CMD... ; appends "name wall user+sys maxrss_kb" to $w/results
    local name=$1; shift
    sync
    /usr/bin/time -f "%e %U %S %M" -o "$w/t" "$@" >/dev/null 2>"$w/err" || {
        echo "bench: $name failed:" >&2; cat "$w/err" >&2; exit 1; }
    read -r e u s m < "$w/t"
    echo "$name $e $(echo "$u + $s" | bc) $m" >> "$w/results"
}

: > "$w/results"
o=$w/out
mkdir "$o"
for i in $(seq "$runs"); do
    echo "bench: run $i/$runs" >&2
    mkdir "$o/tar-$i"
    measure tar tar -xzf "$gzfile" -C "$o/tar-$i"
    measure umoci umoci unpack --image "$L:latest" "$o/umoci-$i"
    measure berth "$berth" --store "$o/berth-$i" import-oci -q --sync=no "$L:latest" img
    measure berth+sync "$berth" --store "$o/berth-sync-$i" import-oci -q "$L:latest" img
    if [ -n "$before" ]; then
        measure before "$before" --store "$o/before-$i" import-oci -q --sync=no "$L:latest" img
        measure before+sync "$before" --store "$o/before-sync-$i" import-oci -q "$L:latest" img
    fi
done

sed 's/^/bench: raw /' "$w/results" >&2
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v n="$1" -v c="$2" '$1==n {print $c}' "$w/results" | median; }
printf '\nimport benchmark: %s\n' "$what"
printf 'output on %s (%s)\n' "$w" "$fs"
printf 'layer: %.1f MiB gzip, %.1f MiB uncompressed; median of %s runs, warm cache, %s CPUs\n\n' \
    "$(echo "$ls/1048576" | bc -l)" "$(echo "$usize/1048576" | bc -l)" "$runs" "$(nproc)"
printf '%-12s %10s %10s %12s\n' tool wall_s cpu_s peak_rss_MiB
for n in tar umoci berth berth+sync ${before:+before before+sync}; do
    printf '%-12s %10.2f %10.2f %12.1f\n' "$n" "$(col $n 2)" "$(col $n 3)" "$(echo "$(col $n 4)/1024" | bc -l)"
done
bt=$(col berth 2); tt=$(col tar 2); ut=$(col umoci 2)
printf '\nberth / tar -xzf:     %.2fx  (target <= 1.0)\n' "$(echo "$bt/$tt" | bc -l)"
printf 'berth / umoci unpack: %.2fx  (target <= 0.5)\n' "$(echo "$bt/$ut" | bc -l)"
ratios() { # ROW NOTE
    local x; x=$(col "$1" 2)
    printf '%s / tar -xzf: %.2fx, / umoci unpack: %.2fx%s\n' "$1" \
        "$(echo "$x/$tt" | bc -l)" "$(echo "$x/$ut" | bc -l)" "$2"
}
ratios berth+sync '  (tar and umoci do not sync)'
if [ -n "$before" ]; then ratios before ''; ratios before+sync ''; fi
