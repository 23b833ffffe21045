#!/usr/bin/env bash
# Builds (once) the Debian 12 disk image the Molecule scenario molecule/vm boots under QEMU.
#
#   scripts/vm/build-image.sh [OUT_DIR]      (default: <repo>/build/vm)
#
# Prints the directory of the image on stdout: OUT_DIR/image-<key>/ with
#   rootfs.raw   ext4 file system (no partition table) of a debootstrapped Debian 12
#   vmlinuz      the Debian kernel of that file system (QEMU boots it with -kernel)
#   initrd.img   its initramfs
# and keeps the SSH key the image trusts for root in OUT_DIR/ssh/id_ed25519.
# <key> hashes this script, the package list and the public key: change any of them
# and the next run builds a new image; an unchanged one is reused (~0 s). Needs root,
# debootstrap and e2fsprogs (mkfs.ext4 -d: no loop mount), and the Debian mirror.
# Nothing in the guest is installed later (it has no network but QEMU's user-mode NAT):
# every package the scenario needs is in PACKAGES.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/build/vm}
SUITE=bookworm
MIRROR=${CNM_VM_MIRROR:-http://deb.debian.org/debian}
IMAGE_SIZE=3G
# The engine's own needs (python3, nftables + its binding, dnspython, iproute2, util-linux
# for nsenter), python3-apt (the host role's package task checks them with apt), a real
# init (systemd, udev, dbus), what the verify play runs (ping, dig), and what the
# encrypted overlay test runs in the guest (pytest, an etcd member, tcpdump on the LAN):
# this machine's kernel has no ESP, Debian's has.
PACKAGES=(
  linux-image-amd64 systemd-sysv udev dbus kmod openssh-server
  python3 python3-apt python3-nftables python3-dnspython
  iproute2 nftables iptables iputils-ping bind9-dnsutils procps
  python3-pytest etcd-server tcpdump
)

log() { echo "build-image: $*" >&2; }

mkdir -p "$OUT/ssh"
if ! [ -f "$OUT/ssh/id_ed25519" ]; then
  ssh-keygen -q -t ed25519 -N '' -C cnm-molecule-vm -f "$OUT/ssh/id_ed25519"
fi
key=$( { cat "${BASH_SOURCE[0]}"; printf '%s\n' "${PACKAGES[@]}"; cat "$OUT/ssh/id_ed25519.pub"; } \
       | sha256sum | cut -c1-16)
dest=$OUT/image-$key
if [ -f "$dest/rootfs.raw" ] && [ -f "$dest/vmlinuz" ] && [ -f "$dest/initrd.img" ]; then
  log "cached: $dest"
  echo "$dest"
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap)"; exit 1; }
for tool in debootstrap mkfs.ext4 ssh-keygen; do
  command -v "$tool" >/dev/null || { log "missing $tool (make vm-deps)"; exit 1; }
done

work=$(mktemp -d "$OUT/.work-$key.XXXXXX")
cleanup() {
  # debootstrap may leave proc/sys mounted inside the root when it fails half-way
  awk -v r="$work/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r \
    | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
start=$SECONDS
log "debootstrap $SUITE into $root"
include=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
log "debootstrap done in $((SECONDS - start)) s"

# --- configuration of the guest -------------------------------------------------------
echo cnm-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 cnm-vm\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# QEMU's user-mode network: DHCP gives 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3.
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.socket \
  "$root/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
printf 'nameserver 10.0.2.3\n' > "$root/etc/resolv.conf"
# root logs in with the key only; the serial console gets a root shell for debugging.
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$OUT/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat > "$root/etc/ssh/sshd_config.d/cnm.conf" <<'SSHD'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
SSHD
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'GETTY'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
GETTY
# no waiting for a network that is not coming, no timers waking up the slow guest
rm -f "$root/etc/systemd/system/timers.target.wants/"* 2>/dev/null || true
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
# the package's own etcd member would run for nothing: the test starts its own
ln -sf /dev/null "$root/etc/systemd/system/etcd.service"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*

# --- the image ----------------------------------------------------------------------------
mkdir -p "$work/out"
cp "$(readlink -f "$root/vmlinuz")" "$work/out/vmlinuz"
cp "$(readlink -f "$root/initrd.img")" "$work/out/initrd.img"
mkfs.ext4 -q -F -L cnm-vm -d "$root" "$work/out/rootfs.raw" "$IMAGE_SIZE" >&2
rm -rf "$dest"
mv "$work/out" "$dest"
log "built $dest in $((SECONDS - start)) s"
echo "$dest"
