#!/usr/bin/env bash
# Build the guest image for the server stand-in from Debian packages:
#   OUT/vmlinuz            the Debian 12 kernel (linux-image-amd64's dependency)
#   OUT/initramfs.cpio.gz  busybox-static + the virtio and pvpanic modules + images/init
#   OUT/disk.raw           a UEFI-bootable GPT disk: an EFI system partition with
#                          GRUB (grub-efi-amd64-bin), vmlinuz and the initramfs,
#                          built by tools/diskimage.py without mounting anything
# The result is cached: a stamp records the package versions and the inputs'
# checksum, and a re-run with nothing changed does nothing.
set -euo pipefail

OUT=${1:?usage: images/build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Load order matters: each module after the ones it depends on.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net pvpanic pvpanic-mmio"

resolve_kernel() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}
kpkg=$(resolve_kernel)
if [ -z "$kpkg" ]; then  # no package lists yet (a fresh machine): fetch them once
  apt-get update -q >/dev/null
  kpkg=$(resolve_kernel)
fi
[ -n "$kpkg" ] || { echo "images/build.sh: cannot resolve linux-image-amd64's kernel package" >&2; exit 1; }
kver_pkg=$(apt-cache policy "$kpkg" | awk '/Candidate:/{print $2}')
bver=$(apt-cache policy busybox-static | awk '/Candidate:/{print $2}')
# The disk's boot loader is built from the installed GRUB modules.
gver=$(dpkg-query -W -f='${Version}' grub-efi-amd64-bin 2>/dev/null || echo none)
inputs=$(cat "$HERE/build.sh" "$HERE/init" "$HERE/udhcpc.script" "$HERE/../tools/diskimage.py" | sha256sum | cut -c1-16)
stamp="$kpkg=$kver_pkg busybox-static=$bver grub-efi-amd64-bin=$gver inputs=$inputs"

if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$stamp" ] \
   && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initramfs.cpio.gz" ] && [ -s "$OUT/disk.raw" ]; then
  echo "guest image up to date in $OUT"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT/debs"
# apt-get download writes into the current directory; _apt cannot write to
# root-owned temp dirs, hence the sandbox warning is harmless.
(cd "$OUT/debs" && { ls "$kpkg"_*.deb >/dev/null 2>&1 || apt-get download "$kpkg"; } \
  && { ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static; }) 2>&1 \
  | grep -v "unsandboxed" || true
kdeb=$(ls "$OUT/debs/$kpkg"_*.deb | tail -n1)
bdeb=$(ls "$OUT/debs"/busybox-static_*.deb | tail -n1)

dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"
kver=${kpkg#linux-image-}
cp "$work/kernel/boot/vmlinuz-$kver" "$OUT/vmlinuz.new"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,mnt,etc,lib/modules,bmaas,etc/udhcpc}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for m in $MODULES; do
  f=$(find "$work/kernel/lib/modules/$kver" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
  [ -n "$f" ] || { echo "images/build.sh: module $m missing from $kpkg" >&2; exit 1; }
  case "$f" in *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;; *) cp "$f" "$root/lib/modules/$m.ko" ;; esac
done
echo "$MODULES" > "$root/etc/modules-order"
install -m 0755 "$HERE/init" "$root/init"
install -m 0755 "$HERE/udhcpc.script" "$root/etc/udhcpc/default.script"
# A fixed mtime and sorted names keep the archive reproducible.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z \
  | cpio --null --create --format=newc --owner=0:0 --quiet --reproducible) \
  | gzip -n -9 > "$OUT/initramfs.cpio.gz.new"
mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv "$OUT/initramfs.cpio.gz.new" "$OUT/initramfs.cpio.gz"
# tools/diskimage.py needs only the standard library: any python3 will do.
(cd "$HERE/.." && "${PYTHON:-python3}" -m tools.diskimage \
  --kernel "$OUT/vmlinuz" --initrd "$OUT/initramfs.cpio.gz" --out "$OUT/disk.raw" >/dev/null)
echo "$stamp" > "$OUT/stamp"
echo "guest image built in $OUT ($kpkg $kver_pkg, busybox $bver)"
