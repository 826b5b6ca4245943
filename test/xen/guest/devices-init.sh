#!/bin/sh
# /init of the real-Xen tier's device guest (test/xen/guest-devices.xen.mjs): appended as a
# second cpio archive over the lab's initrd-dev.cpio (its busybox, modules and /modules list),
# it replaces the lab's /init. Prints on hvc0 (xenconsoled's log in dom0):
#   XD-DISK: dev=... path=pv|emulated first-line=...       (the image's first line)
#   XD-DISK-WRITE: ok XD-WROTE ...                          (at byte 4096 of the disk)
#   XD-CDROM: first-line=...                                 (marker.txt of the ISO in hdc)
#   XD-NET-UP: driver=... addr=10.99.0.2/24
#   XD-READY
# then every 2 s: `XD-TICK n` on hvc0 and `XD-SERIAL n` on ttyS0 (QEMU's 16550), and
# `XD-CDROM-NOW: first-line=...` whenever the CD in hdc changed (xl cd-insert). After a save and
# restore the ticks go on from where they were.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do modprobe "$m" 2>/dev/null; done
mkdir -p /cd

disk= i=0
while [ $i -lt 60 ]; do
  for d in xvda sda hda; do [ -b /dev/$d ] && { disk=$d; break 2; }; done
  sleep 0.5; i=$((i+1))
done
if [ -n "$disk" ]; then
  case $disk in xvd*) path=pv ;; *) path=emulated ;; esac
  echo "XD-DISK: dev=/dev/$disk path=$path first-line=$(head -n1 /dev/$disk)"
  w="XD-WROTE $(cut -d' ' -f1 /proc/uptime)"
  if printf '%s\n' "$w" | dd of=/dev/$disk bs=512 seek=8 conv=notrunc,fsync 2>/dev/null; then
    sync; echo "XD-DISK-WRITE: ok $w"
  else
    echo "XD-DISK-WRITE: failed"
  fi
else
  echo "XD-DISK: none"
fi

cdline() {
  if mount -t iso9660 -o ro /dev/sr0 /cd 2>/dev/null; then
    head -n1 /cd/marker.txt 2>/dev/null; umount /cd
  fi
}
i=0; while [ $i -lt 30 ] && [ ! -b /dev/sr0 ]; do sleep 0.5; i=$((i+1)); done
cd=$(cdline)
echo "XD-CDROM: first-line=$cd"

ip link set lo up
i=0; while [ $i -lt 60 ] && [ ! -e /sys/class/net/eth0 ]; do sleep 0.5; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip addr add 10.99.0.2/24 dev eth0
  ip link set eth0 up
  echo "XD-NET-UP: driver=$(basename "$(readlink /sys/class/net/eth0/device/driver)") addr=10.99.0.2/24"
else
  echo "XD-NET-UP: none"
fi

echo "XD-READY"
n=0
while [ $n -lt 3000 ]; do
  echo "XD-TICK $n"
  echo "XD-SERIAL $n" > /dev/ttyS0 2>/dev/null
  now=$(cdline)
  if [ -n "$now" ] && [ "$now" != "$cd" ]; then cd=$now; echo "XD-CDROM-NOW: first-line=$cd"; fi
  sleep 2; n=$((n+1))
done
poweroff -f
