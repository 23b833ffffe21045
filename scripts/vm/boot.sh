#!/usr/bin/env bash
# Boots one throwaway VM of the Molecule scenario molecule/vm and waits for its SSH.
#
#   scripts/vm/boot.sh IMAGE_DIR INSTANCE_DIR [GUEST_PORT...]
#
# IMAGE_DIR is what build-image.sh printed; INSTANCE_DIR (created) receives
#   disk.qcow2  copy-on-write overlay over IMAGE_DIR/rootfs.raw (the cached image stays clean)
#   qemu.pid    the QEMU process (destroy.yml kills it by this PID)
#   serial.log  the guest's console (kernel, systemd, a root shell)
#   qemu.log    QEMU's own messages
# QEMU runs under TCG (NOTES.md: the /dev/kvm here faults stock kernels), -smp 2 -m 2048,
# user-mode networking: the guest is 10.0.2.15 behind QEMU's NAT; its port 22 and every
# GUEST_PORT are forwarded from free ports of 127.0.0.1. Prints one line of JSON:
# {"ssh_port": N, "forwards": {"GUEST_PORT": HOST_PORT, ...}, "pid": N, "boot_seconds": N}.
# Fails (and kills QEMU) when SSH does not answer within CNM_VM_BOOT_TIMEOUT (900) s
# (it takes ~30 s on an idle machine, ~5 min when other jobs load its two cores).
set -euo pipefail

image=$(cd "$1" && pwd)
mkdir -p "$2"
dir=$(cd "$2" && pwd)
shift 2
key=$(dirname "$image")/ssh/id_ed25519
deadline=$((SECONDS + ${CNM_VM_BOOT_TIMEOUT:-900}))
ACCEL=${CNM_VM_ACCEL:-tcg}
SMP=${CNM_VM_SMP:-2}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rm -f "$dir/disk.qcow2" "$dir/qemu.pid" "$dir/serial.log" "$dir/qemu.log"
qemu-img create -q -f qcow2 -F raw -b "$image/rootfs.raw" "$dir/disk.qcow2"

ssh_port=$(free_port)
fwd="hostfwd=tcp:127.0.0.1:$ssh_port-:22"
forwards=""
for guest in "$@"; do
  host=$(free_port)
  fwd="$fwd,hostfwd=tcp:127.0.0.1:$host-:$guest"
  forwards="$forwards${forwards:+, }\"$guest\": $host"
done

start=$SECONDS
# No rootdelay=: Debian's initramfs sleeps that long unconditionally (it would also raise
# its 180 s wait for /dev/vda, which ran out once on a heavily loaded machine).
# nowatchdog and the stall warnings off: a starved vCPU is normal under TCG.
qemu-system-x86_64 -name cnm-molecule-vm -accel "$ACCEL" -smp "$SMP" -m 2048 \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 nowatchdog rcupdate.rcu_cpu_stall_suppress=1" \
  -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
  -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0 \
  -rtc base=utc -display none -monitor none -serial "file:$dir/serial.log" \
  -pidfile "$dir/qemu.pid" -daemonize 2> "$dir/qemu.log"
pid=$(cat "$dir/qemu.pid")

# SSH answers once sshd runs; until then the forward accepts and closes at once.
while :; do
  if ssh -q -i "$key" -p "$ssh_port" -o BatchMode=yes -o ConnectTimeout=5 \
       -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
       root@127.0.0.1 true </dev/null 2>/dev/null; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "boot.sh: QEMU exited; see $dir/qemu.log and $dir/serial.log" >&2
    tail -20 "$dir/qemu.log" "$dir/serial.log" >&2 || true
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "boot.sh: no SSH on 127.0.0.1:$ssh_port after $((SECONDS - start)) s; killing QEMU $pid" >&2
    tail -30 "$dir/serial.log" >&2 || true
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 2
done
printf '{"ssh_port": %d, "forwards": {%s}, "pid": %d, "boot_seconds": %d}\n' \
  "$ssh_port" "$forwards" "$pid" $((SECONDS - start))
