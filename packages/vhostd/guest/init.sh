#!/bin/sh
# /init of the vhostd guest (busybox initramfs, built by build.sh beside this file) for the
# e2e tests and the migration drill.
# Parameters come from the kernel command line as key=value words:
#   test=NAME   which built-in test(s) to run, comma-separated, in order
#               (ping, netinfo, blkinfo, blkverify, blkrandom, blkdiscard, blkcache, blkloop, shell-cmd, none)
#   ip=A/N      address for eth0 (default: none), plus the test's own keys (see each test).
# Every result is one line on the serial console, starting at column 0:
#   VHOSTD-RESULT {"test":"NAME","ok":true|false,...}
# and the guest always ends with `poweroff -f` so QEMU (-no-reboot) exits.
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
# Kernel messages must not split our result lines on the shared console.
echo 1 >/proc/sys/kernel/printk

# arg KEY DEFAULT: the value of KEY= on the kernel command line.
arg() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "$1="*) echo "${w#*=}"; return ;; esac
  done
  echo "$2"
}

now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }

# result TEST OK "EXTRA-JSON-FIELDS"
result() { echo "VHOSTD-RESULT {\"test\":\"$1\",\"ok\":$2${3:+,$3}}"; }

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "VHOSTD-WARN insmod $m failed"
done

ip link set lo up
IF=$(arg if eth0)
# If a virtio-net device (id 0x0001) is present, give its netdev a moment to register.
n=0
while [ ! -e "/sys/class/net/$IF" ] && [ $n -lt 20 ] && grep -qx 0x0001 /sys/bus/virtio/devices/*/device 2>/dev/null; do
  sleep 0.1; n=$((n + 1))
done
if [ -e "/sys/class/net/$IF" ]; then
  ip link set "$IF" up
  addr=$(arg ip "")
  [ -n "$addr" ] && ip addr add "$addr" dev "$IF"
fi
echo "VHOSTD-BOOTED uptime_ms=$(now_ms)"

# --- tests ------------------------------------------------------------------------------

# Carrier comes up after `ip link set up`, or only once a late back-end connects, and
# operstate follows it a little later (linkwatch): wait up to carrier=SECS (default 10).
wait_carrier() {
  n=0; lim=$(($(arg carrier 10) * 10))
  while [ "$(cat /sys/class/net/$IF/operstate 2>/dev/null)" != up ] && [ $n -lt $lim ]; do sleep 0.1; n=$((n + 1)); done
}

# ping: peer=IP count=N interval=SECS size=BYTES wait=SECS (after the last one)
t_ping() {
  peer=$(arg peer 10.0.0.1) count=$(arg count 10) interval=$(arg interval 0.2)
  size=$(arg size 56) wait=$(arg wait 2)
  wait_carrier
  t0=$(now_ms)
  out=$(ping -c "$count" -i "$interval" -s "$size" -W "$wait" "$peer" 2>&1)
  t1=$(now_ms)
  echo "$out" | tail -3
  sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
  recv=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
  ok=false; [ "${recv:-0}" -gt 0 ] && ok=true
  result ping $ok "\"peer\":\"$peer\",\"sent\":${sent:-0},\"received\":${recv:-0},\"ms\":$((t1 - t0))"
}

# netinfo: (after waiting for carrier) MAC, MTU, link, queue counts, negotiated virtio feature bits of $IF.
t_netinfo() {
  d=/sys/class/net/$IF
  if [ ! -e "$d" ]; then result netinfo false "\"error\":\"no $IF\""; return; fi
  wait_carrier
  rxq=$(ls -d "$d"/queues/rx-* 2>/dev/null | wc -l)
  txq=$(ls -d "$d"/queues/tx-* 2>/dev/null | wc -l)
  # The virtio device's features file is the negotiated bit string, bit 0 first.
  feat=$(cat "$d/device/features" 2>/dev/null)
  result netinfo true "\"if\":\"$IF\",\"mac\":\"$(cat $d/address)\",\"mtu\":$(cat $d/mtu),\"operstate\":\"$(cat $d/operstate)\",\"carrier\":$(cat $d/carrier 2>/dev/null || echo 0),\"rxQueues\":$rxq,\"txQueues\":$txq,\"features\":\"$feat\""
}

# blkinfo: dev=vda. Size in 512-byte sectors, block sizes, queue count, read-only flag.
t_blkinfo() {
  dev=$(arg dev vda); d=/sys/block/$dev
  if [ ! -e "$d" ]; then result blkinfo false "\"error\":\"no $dev\""; return; fi
  mq=$(ls -d "$d"/mq/* 2>/dev/null | wc -l)
  result blkinfo true "\"dev\":\"$dev\",\"sectors\":$(cat $d/size),\"logicalBlockSize\":$(cat $d/queue/logical_block_size),\"physicalBlockSize\":$(cat $d/queue/physical_block_size),\"queues\":$mq,\"ro\":$(cat $d/ro),\"serial\":\"$(cat $d/serial 2>/dev/null)\",\"discardMaxBytes\":$(cat $d/queue/discard_max_bytes 2>/dev/null || echo 0),\"cacheType\":\"$(cat $d/cache_type 2>/dev/null)\""
}

# blkverify: dev=vda mib=N offset=MIB rounds=R seed=S. Each round writes a pattern that
# differs per MiB and per round with O_DIRECT, drops caches, reads it back with O_DIRECT and
# compares sha256 sums. One blkverify-round line per round, then the summary.
t_blkverify() {
  dev=$(arg dev vda) mib=$(arg mib 8) off=$(arg offset 0) rounds=$(arg rounds 1) seed=$(arg seed 1)
  if [ ! -b "/dev/$dev" ]; then result blkverify false "\"error\":\"no /dev/$dev\""; return; fi
  bad=0 r=0 wms=0 rms=0
  while [ $r -lt "$rounds" ]; do
    i=0; : >/tmp/pat
    while [ $i -lt "$mib" ]; do
      yes "vhostd seed=$seed round=$r mib=$i " | head -c 1048576 >>/tmp/pat; i=$((i + 1))
    done
    want=$(sha256sum </tmp/pat | cut -d' ' -f1)
    t0=$(now_ms)
    dd if=/tmp/pat of="/dev/$dev" bs=1M seek="$off" oflag=direct conv=fsync,notrunc status=none 2>/tmp/err
    wrc=$?
    t1=$(now_ms)
    sync; echo 3 >/proc/sys/vm/drop_caches
    got=$(dd if="/dev/$dev" bs=1M skip="$off" count="$mib" iflag=direct status=none 2>>/tmp/err | sha256sum | cut -d' ' -f1)
    t2=$(now_ms)
    ok=true; [ $wrc -eq 0 ] && [ "$got" = "$want" ] || { ok=false; bad=$((bad + 1)); }
    echo "VHOSTD-RESULT {\"test\":\"blkverify-round\",\"ok\":$ok,\"round\":$r,\"writeMs\":$((t1 - t0)),\"readMs\":$((t2 - t1)),\"want\":\"$want\",\"got\":\"$got\"}"
    [ $wrc -eq 0 ] || cat /tmp/err
    wms=$((wms + t1 - t0)) rms=$((rms + t2 - t1)) r=$((r + 1))
  done
  ok=false; [ $bad -eq 0 ] && ok=true
  result blkverify $ok "\"dev\":\"$dev\",\"mib\":$mib,\"rounds\":$rounds,\"failed\":$bad,\"writeMs\":$wms,\"readMs\":$rms"
}

# blkrandom: dev=vda rmib=N roffset=MIB. Writes N MiB from /dev/urandom with O_DIRECT and an
# fsync (a FLUSH), drops caches, reads them back with O_DIRECT and compares byte for byte. The
# sha256 lets the host check its backing file holds the same bytes.
t_blkrandom() {
  dev=$(arg dev vda) mib=$(arg rmib 8) off=$(arg roffset 0)
  if [ ! -b "/dev/$dev" ]; then result blkrandom false "\"error\":\"no /dev/$dev\""; return; fi
  dd if=/dev/urandom of=/tmp/rnd bs=1M count="$mib" status=none
  want=$(sha256sum </tmp/rnd | cut -d' ' -f1)
  t0=$(now_ms)
  dd if=/tmp/rnd of="/dev/$dev" bs=1M seek="$off" oflag=direct conv=fsync,notrunc status=none 2>/tmp/err
  wrc=$?
  sync; echo 3 >/proc/sys/vm/drop_caches
  dd if="/dev/$dev" of=/tmp/back bs=1M skip="$off" count="$mib" iflag=direct status=none 2>>/tmp/err
  rrc=$?
  t1=$(now_ms)
  got=$(sha256sum </tmp/back | cut -d' ' -f1)
  ok=false; [ $wrc -eq 0 ] && [ $rrc -eq 0 ] && cmp -s /tmp/rnd /tmp/back && [ "$got" = "$want" ] && ok=true
  [ $ok = true ] || cat /tmp/err
  rm -f /tmp/rnd /tmp/back
  result blkrandom $ok "\"dev\":\"$dev\",\"mib\":$mib,\"offset\":$off,\"sha256\":\"$want\",\"got\":\"$got\",\"ms\":$((t1 - t0))"
}

# blkdiscard: dev=vda dmib=N doffset=MIB. Fills the range (O_DIRECT + fsync), discards it
# (BLKDISCARD), then reads it back with O_DIRECT: our device punches a hole, so it must read as
# zeros (and the host sees the backing's blocks freed).
t_blkdiscard() {
  dev=$(arg dev vda) mib=$(arg dmib 8) off=$(arg doffset 0)
  q=/sys/block/$dev/queue
  max=$(cat $q/discard_max_bytes 2>/dev/null || echo 0)
  dd if=/dev/urandom of="/dev/$dev" bs=1M seek="$off" count="$mib" oflag=direct conv=fsync,notrunc status=none 2>/tmp/err
  blkdiscard -o $((off * 1048576)) -l $((mib * 1048576)) "/dev/$dev" 2>>/tmp/err
  drc=$?
  want=$(dd if=/dev/zero bs=1M count="$mib" status=none | sha256sum | cut -d' ' -f1)
  got=$(dd if="/dev/$dev" bs=1M skip="$off" count="$mib" iflag=direct status=none 2>>/tmp/err | sha256sum | cut -d' ' -f1)
  ok=false; [ $drc -eq 0 ] && [ "$got" = "$want" ] && ok=true
  [ $ok = true ] || cat /tmp/err
  result blkdiscard $ok "\"dev\":\"$dev\",\"mib\":$mib,\"offset\":$off,\"discardMaxBytes\":$max,\"zeros\":$([ "$got" = "$want" ] && echo true || echo false)"
}

# blkcache: dev=vda coffset=MIB. The cache mode the device reports (CONFIG_WCE), switched to write-through
# and back through the config space (SET_CONFIG).
t_blkcache() {
  dev=$(arg dev vda) f=/sys/block/$dev/cache_type coff=$(arg coffset 0)
  before=$(cat $f 2>/dev/null)
  echo "write through" >$f 2>/tmp/err; wt=$(cat $f 2>/dev/null)
  dd if=/dev/urandom of="/dev/$dev" bs=4k seek=$((coff * 256)) count=16 oflag=direct conv=fsync,notrunc status=none 2>>/tmp/err; wrc=$?
  echo "write back" >$f 2>>/tmp/err; wb=$(cat $f 2>/dev/null)
  ok=false; [ "$before" = "write back" ] && [ "$wt" = "write through" ] && [ "$wb" = "write back" ] && [ $wrc -eq 0 ] && ok=true
  [ $ok = true ] || cat /tmp/err
  result blkcache $ok "\"before\":\"$before\",\"writeThrough\":\"$wt\",\"after\":\"$wb\""
}

# blkloop: dev=vda lmib=N lslots=K lsecs=S. Write-then-verify for S seconds: round r writes an
# N MiB pattern (unique per round and MiB) to slot r % K with O_DIRECT + fsync, reads it back
# with O_DIRECT and compares; at the end every slot is read once more and must hold the last
# pattern written to it. One blkloop-round line per failed round; any dd error counts.
# lwt=1 switches the disk to write-through first (so the host can check the mode survives).
# lstop=M also ends the loop early once the host has written "VHOSTD-STOP" at MiB M of the
# disk (the migration drill: the loop runs for as many hops as the host makes).
t_blkloop() {
  dev=$(arg dev vda) mib=$(arg lmib 2) slots=$(arg lslots 8) secs=$(arg lsecs 30)
  if [ ! -b "/dev/$dev" ]; then result blkloop false "\"error\":\"no /dev/$dev\""; return; fi
  [ "$(arg lwt 0)" = 1 ] && echo "write through" >/sys/block/$dev/cache_type
  # A random base made once; each round stamps its number into every MiB (cheap under TCG, so
  # the loop spends its time in I/O, where the kills should land).
  dd if=/dev/urandom of=/tmp/base bs=1M count="$mib" status=none
  pat() { cp /tmp/base /tmp/pat; i=0; while [ $i -lt "$mib" ]; do printf "vhostd loop round=%08d mib=%04d" "$1" $i | dd of=/tmp/pat bs=1 seek=$((i * 1048576)) conv=notrunc status=none; i=$((i + 1)); done; }
  end=$(($(now_ms) + secs * 1000)) r=0 bad=0 ioerr=0 maxms=0 stop=$(arg lstop "")
  stopped() { [ -n "$stop" ] && [ "$(dd if="/dev/$dev" bs=4096 skip=$((stop * 256)) count=1 iflag=direct status=none 2>/dev/null | head -c 11)" = VHOSTD-STOP ]; }
  echo "VHOSTD-LOOP-START"
  while [ "$(now_ms)" -lt $end ] && ! stopped; do
    slot=$((r % slots)); pat $r
    want=$(sha256sum </tmp/pat | cut -d' ' -f1)
    t0=$(now_ms)
    dd if=/tmp/pat of="/dev/$dev" bs=1M seek=$((slot * mib)) oflag=direct conv=fsync,notrunc status=none 2>/tmp/err || ioerr=$((ioerr + 1))
    got=$(dd if="/dev/$dev" bs=1M skip=$((slot * mib)) count="$mib" iflag=direct status=none 2>>/tmp/err | sha256sum | cut -d' ' -f1)
    t1=$(now_ms); [ $((t1 - t0)) -gt $maxms ] && maxms=$((t1 - t0))
    if [ "$got" != "$want" ] || [ -s /tmp/err ]; then
      bad=$((bad + 1))
      echo "VHOSTD-RESULT {\"test\":\"blkloop-round\",\"ok\":false,\"round\":$r,\"slot\":$slot,\"want\":\"$want\",\"got\":\"$got\"}"
      cat /tmp/err
    fi
    eval "last_$slot=$r"
    r=$((r + 1))
  done
  final=0 s=0
  while [ $s -lt "$slots" ] && [ $s -lt $r ]; do
    eval "lr=\$last_$s"; pat "$lr"
    want=$(sha256sum </tmp/pat | cut -d' ' -f1)
    got=$(dd if="/dev/$dev" bs=1M skip=$((s * mib)) count="$mib" iflag=direct status=none 2>/tmp/err | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || final=$((final + 1))
    s=$((s + 1))
  done
  ok=false; [ $bad -eq 0 ] && [ $ioerr -eq 0 ] && [ $final -eq 0 ] && [ $r -gt 0 ] && ok=true
  result blkloop $ok "\"stopped\":$(stopped && echo true || echo false),\"rounds\":$r,\"failed\":$bad,\"ioErrors\":$ioerr,\"finalMismatches\":$final,\"maxRoundMs\":$maxms"
}

# shell-cmd: cmd=BASE64 of a shell command; its output is printed between markers.
t_shell_cmd() {
  cmd=$(arg cmd "" | base64 -d 2>/dev/null)
  echo "VHOSTD-OUTPUT-BEGIN"
  sh -c "$cmd" 2>&1
  rc=$?
  echo "VHOSTD-OUTPUT-END"
  ok=false; [ $rc -eq 0 ] && ok=true
  result shell-cmd $ok "\"exitCode\":$rc"
}

# test=a,b runs several tests in one boot (a boot costs seconds under TCG).
for name in $(arg test none | tr , ' '); do
  case "$name" in
    ping) t_ping ;;
    netinfo) t_netinfo ;;
    blkinfo) t_blkinfo ;;
    blkverify) t_blkverify ;;
    blkrandom) t_blkrandom ;;
    blkdiscard) t_blkdiscard ;;
    blkcache) t_blkcache ;;
    blkloop) t_blkloop ;;
    shell-cmd) t_shell_cmd ;;
    none) result none true ;;
    *) result "$name" false "\"error\":\"unknown test\"" ;;
  esac
done
echo "VHOSTD-DONE"
sync
poweroff -f
